use std::fmt;
use std::str::FromStr;

/// How a balancer chooses an endpoint.
///
/// Parses the original module's names (`"round-robin"`, `"least-connections"`,
/// `"weighted"`, `"random"`, `"ip-hash"`) and `"p2c"`.
///
/// ```
/// use fluxor_registry::Strategy;
///
/// assert_eq!("least-connections".parse::<Strategy>().unwrap(), Strategy::LeastConnections);
/// let err = "fastest".parse::<Strategy>().unwrap_err();
/// assert!(err.to_string().contains("round-robin, least-connections, weighted, random, ip-hash, p2c"));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Strategy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight; ties rotate.
    LeastConnections,
    /// Smooth weighted round-robin by instance weight.
    Weighted,
    /// Uniformly at random.
    Random,
    /// Consistent hashing of the client address (or session or hash key).
    IpHash,
    /// Power of two random choices, comparing peak-EWMA latency × in-flight
    /// requests ÷ weight.
    #[serde(rename = "p2c")]
    P2cPeakEwma,
}

impl Strategy {
    /// Every strategy, in the order of [`Strategy::NAMES`].
    pub const ALL: [Strategy; 6] = [
        Strategy::RoundRobin,
        Strategy::LeastConnections,
        Strategy::Weighted,
        Strategy::Random,
        Strategy::IpHash,
        Strategy::P2cPeakEwma,
    ];
    /// The names [`Strategy::from_str`] accepts.
    pub const NAMES: [&'static str; 6] = [
        "round-robin",
        "least-connections",
        "weighted",
        "random",
        "ip-hash",
        "p2c",
    ];

    /// The strategy's name, as the original module spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastConnections => "least-connections",
            Strategy::Weighted => "weighted",
            Strategy::Random => "random",
            Strategy::IpHash => "ip-hash",
            Strategy::P2cPeakEwma => "p2c",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown load-balancing strategy {name:?}, expected one of: round-robin, least-connections, weighted, random, ip-hash, p2c"
)]
pub struct UnknownStrategy {
    name: String,
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str() == lower)
            .ok_or_else(|| UnknownStrategy { name: s.to_owned() })
    }
}

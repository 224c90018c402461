use crate::instance::HealthStatus;

/// The raw result of one run of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: HealthStatus,
    pub(crate) output: String,
}

impl Outcome {
    pub(crate) fn critical(output: String) -> Self {
        Self {
            status: HealthStatus::Critical,
            output,
        }
    }
}

const MARK: &str = "… (truncated)";

/// Cuts `text` to at most `max` bytes on a char boundary, marking the cut.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(MARK);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("short".into(), 100), "short");
        let long = "é".repeat(100);
        let cut = truncate(long, 50);
        assert!(cut.len() <= 50, "{}", cut.len());
        assert!(cut.ends_with(MARK));
        assert!(cut.starts_with("éé"));
    }
}

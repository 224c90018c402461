//! Validation rules for definitions and queries, and the error that names the
//! field that broke them.

use std::fmt;

/// The most characters a service name may have.
pub const MAX_NAME_LEN: usize = 128;
/// The most characters an instance id may have.
pub const MAX_ID_LEN: usize = 128;
/// The most characters a host name may have (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;
/// The most tags one instance may carry.
pub const MAX_TAGS: usize = 64;
/// The most characters one tag may have.
pub const MAX_TAG_LEN: usize = 128;
/// The most characters a metadata key may have.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// The most bytes the metadata of one instance may take, serialized as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The largest weight an instance may have.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A definition or query field that failed validation.
///
/// The error names the field and says what was wrong with it, so that a
/// caller can show it to whoever wrote the bad input.
///
/// ```
/// use fluxor_registry::ServiceDefinition;
///
/// let err = ServiceDefinition::new("orders", "localhost", 0).validate().unwrap_err();
/// assert_eq!(err.field(), "port");
/// assert_eq!(err.to_string(), "invalid `port`: must not be 0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    field: &'static str,
    kind: ValidationErrorKind,
}

/// What was wrong with a field; see [`ValidationError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationErrorKind {
    /// The field was empty.
    Empty,
    /// The field was longer than allowed.
    TooLong {
        /// The limit.
        max: usize,
        /// What was given.
        len: usize,
    },
    /// The field held a character it may not hold.
    IllegalCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the field.
        position: usize,
    },
    /// The field was zero where zero is meaningless.
    Zero,
    /// The field was above its maximum.
    TooLarge {
        /// The limit.
        max: u64,
        /// What was given.
        value: u64,
    },
    /// The field could not be parsed.
    Unparsable(String),
    /// A host that is neither an IP address nor a valid DNS name.
    InvalidHost,
    /// A list with more entries than allowed.
    TooMany {
        /// The limit.
        max: usize,
        /// What was given.
        count: usize,
    },
    /// A value whose serialized size is over the limit.
    Oversized {
        /// The limit, in bytes.
        max: usize,
        /// The size given, in bytes.
        size: usize,
    },
}

impl ValidationError {
    pub(crate) fn new(field: &'static str, kind: ValidationErrorKind) -> Self {
        Self { field, kind }
    }

    /// The name of the field that failed, e.g. `"port"` or `"tags[3]"`'s
    /// list, `"tags"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &ValidationErrorKind {
        &self.kind
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: ", self.field)?;
        match &self.kind {
            ValidationErrorKind::Empty => f.write_str("must not be empty"),
            ValidationErrorKind::TooLong { max, len } => {
                write!(f, "{len} characters, at most {max} allowed")
            }
            ValidationErrorKind::IllegalCharacter { ch, position } => {
                write!(f, "illegal character {ch:?} at byte {position}")
            }
            ValidationErrorKind::Zero => f.write_str("must not be 0"),
            ValidationErrorKind::TooLarge { max, value } => {
                write!(f, "{value} is over the maximum of {max}")
            }
            ValidationErrorKind::Unparsable(why) => write!(f, "cannot be parsed: {why}"),
            ValidationErrorKind::InvalidHost => {
                f.write_str("neither an IP address nor a valid DNS name")
            }
            ValidationErrorKind::TooMany { max, count } => {
                write!(f, "{count} entries, at most {max} allowed")
            }
            ValidationErrorKind::Oversized { max, size } => {
                write!(f, "{size} bytes, at most {max} allowed")
            }
        }
    }
}

impl std::error::Error for ValidationError {}

/// Checks a name-like identifier: not empty, not too long, ASCII letters,
/// digits and `extra` punctuation only, starting with a letter or digit.
pub(crate) fn identifier(
    field: &'static str,
    value: &str,
    max: usize,
    extra: &[char],
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, ValidationErrorKind::Empty));
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValidationError::new(
            field,
            ValidationErrorKind::TooLong { max, len },
        ));
    }
    for (position, ch) in value.char_indices() {
        let ok = ch.is_ascii_alphanumeric() || (position > 0 && extra.contains(&ch));
        if !ok {
            return Err(ValidationError::new(
                field,
                ValidationErrorKind::IllegalCharacter { ch, position },
            ));
        }
    }
    Ok(())
}

/// Checks a host: an IPv4 or IPv6 address, or a DNS name (RFC 1123 labels).
pub(crate) fn host(value: &str) -> Result<(), ValidationError> {
    const FIELD: &str = "host";
    if value.is_empty() {
        return Err(ValidationError::new(FIELD, ValidationErrorKind::Empty));
    }
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let len = value.len();
    if len > MAX_HOST_LEN {
        return Err(ValidationError::new(
            FIELD,
            ValidationErrorKind::TooLong {
                max: MAX_HOST_LEN,
                len,
            },
        ));
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // A name made only of digits and dots would be a malformed IPv4 address.
    let all_numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if name.is_empty() || all_numeric || !name.split('.').all(valid_label) {
        return Err(ValidationError::new(
            FIELD,
            ValidationErrorKind::InvalidHost,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "127.0.0.1",
            "::1",
            "inventory.svc.cluster.local",
            "a-b.example.com.",
            "my_host",
        ] {
            assert_eq!(host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a.com",
            "a..b",
            "a b",
            "256.1.1.1",
            "1.2.3",
            "http://x",
            ".",
        ] {
            assert!(host(bad).is_err(), "{bad}");
        }
        let long = format!("{}.com", "a".repeat(63)).repeat(5);
        assert!(matches!(
            host(&long).unwrap_err().kind(),
            ValidationErrorKind::TooLong { .. }
        ));
    }

    #[test]
    fn identifiers() {
        assert!(identifier("name", "inventory-service", 10, &['-']).is_err());
        assert!(identifier("name", "inventory", 10, &['-']).is_ok());
        let err = identifier("name", "-x", 10, &['-']).unwrap_err();
        assert_eq!(
            err.kind(),
            &ValidationErrorKind::IllegalCharacter {
                ch: '-',
                position: 0
            }
        );
        let err = identifier("name", "a/b", 10, &['-']).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `name`: illegal character '/' at byte 1"
        );
    }
}

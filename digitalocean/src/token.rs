//! The API token: a string whose `Debug` and `Display` print `[redacted]`, so that it cannot
//! reach a log line, an error message or a report by accident. Only the client reads it, to
//! send it. Where it comes from (a private file, a credential, the environment) is the caller's
//! business: the agent reads it with its own secret files' checks.

/// A DigitalOcean API token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token; from here on it never prints.
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }

    /// The token itself, for the one place that sends it (the `Authorization` header).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints() {
        let token = Token::new("dop_v1_abcdef");
        assert_eq!(
            format!("{token} {token:?} {:?}", Some(&token)),
            "[redacted] [redacted] Some([redacted])"
        );
        assert_eq!(token.expose(), "dop_v1_abcdef");
    }
}

//! Gemini status codes. Only the codes the specification defines can be built, so the server never
//! sends an undefined one (spec v0.16.1 §3.2 and Appendix 1).

/// A two-digit Gemini status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(u8);

impl Status {
    pub const INPUT: Status = Status(10);
    pub const SENSITIVE_INPUT: Status = Status(11);
    pub const SUCCESS: Status = Status(20);
    pub const REDIRECT_TEMPORARY: Status = Status(30);
    pub const REDIRECT_PERMANENT: Status = Status(31);
    pub const TEMPORARY_FAILURE: Status = Status(40);
    pub const SERVER_UNAVAILABLE: Status = Status(41);
    pub const CGI_ERROR: Status = Status(42);
    pub const PROXY_ERROR: Status = Status(43);
    pub const SLOW_DOWN: Status = Status(44);
    pub const PERMANENT_FAILURE: Status = Status(50);
    pub const NOT_FOUND: Status = Status(51);
    pub const GONE: Status = Status(52);
    pub const PROXY_REQUEST_REFUSED: Status = Status(53);
    pub const BAD_REQUEST: Status = Status(59);
    pub const CLIENT_CERTIFICATE_REQUIRED: Status = Status(60);
    pub const CERTIFICATE_NOT_AUTHORISED: Status = Status(61);
    pub const CERTIFICATE_NOT_VALID: Status = Status(62);

    /// The numeric code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// The two ASCII digits of the header.
    pub fn digits(self) -> [u8; 2] {
        [b'0' + self.0 / 10, b'0' + self.0 % 10]
    }

    /// Only 2x responses carry a body (spec §3.1: "If <STATUS> does not belong to the SUCCESS
    /// range of codes, then the server MUST close the connection after sending the header and
    /// MUST NOT send a response body").
    pub fn has_body(self) -> bool {
        self.0 / 10 == 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_body_rule() {
        assert_eq!(&Status::NOT_FOUND.digits(), b"51");
        assert_eq!(&Status::INPUT.digits(), b"10");
        assert!(Status::SUCCESS.has_body());
        for s in [Status::REDIRECT_PERMANENT, Status::NOT_FOUND, Status::BAD_REQUEST, Status::INPUT] {
            assert!(!s.has_body(), "{s:?}");
        }
    }
}

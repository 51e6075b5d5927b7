//! The SMTP command grammar (RFC 5321 §4.1 with the ESMTP parameters we offer), as a pure
//! function from one command line's bytes to a typed [`Command`] or a [`CommandError`] that
//! carries its reply. No I/O and no session state: the session decides what a well-formed
//! command means now. Any byte string is an input; none may panic (fuzzed by
//! `fuzz/fuzz_targets/smtp_command.rs`, property-tested in `tests/command.rs`).

use std::fmt;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain` (`extended`) or `HELO domain`.
    Hello { extended: bool, domain: String },
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The reverse path; empty for the null sender `<>`.
        sender: String,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// The forward path (source routes removed).
        recipient: String,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP` (any argument is ignored, as RFC 5321 §4.1.1.9 allows).
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// The mechanism, upper-cased.
        mechanism: String,
        /// The initial response, when given on the command line.
        initial: Option<String>,
    },
    /// `VRFY` or `EXPN` (refused: they disclose addresses).
    Verify,
    /// `HELP`.
    Help,
}

/// The `MAIL FROM` parameters this server knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `AUTH=<>` or `AUTH=addr` was given (RFC 4954; accepted and ignored).
    pub auth: bool,
}

/// The `BODY` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// Why a command line was refused; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Nothing but spaces.
    Empty,
    /// A verb this server does not know.
    Unrecognized,
    /// A CR or another control character inside the line (only CRLF may end a line).
    ControlCharacter,
    /// The line is not valid UTF-8.
    NotUtf8,
    /// `EHLO`/`HELO` without a domain.
    MissingDomain,
    /// A verb's argument does not follow its syntax; the text shows the right one.
    Syntax(&'static str),
    /// `MAIL FROM` with an unusable address.
    BadSender,
    /// `RCPT TO` with an unusable address.
    BadRecipient,
    /// A parameter this server does not offer, or one with a bad value.
    Parameter(&'static str),
}

impl CommandError {
    /// The reply: code, enhanced status code and text.
    pub fn reply(&self) -> (u16, &'static str, &'static str) {
        match self {
            CommandError::Empty => (500, "5.5.2", "empty command"),
            CommandError::Unrecognized => (500, "5.5.2", "command not recognized"),
            CommandError::ControlCharacter => (
                500,
                "5.5.2",
                "a control character (a bare CR?) inside the command; end lines with CRLF",
            ),
            CommandError::NotUtf8 => (500, "5.5.2", "the command is not valid UTF-8"),
            CommandError::MissingDomain => (501, "5.5.4", "a domain or address is required"),
            CommandError::Syntax(text) => (501, "5.5.4", text),
            CommandError::BadSender => (553, "5.1.7", "the sender address is malformed"),
            CommandError::BadRecipient => (553, "5.1.3", "the recipient address is malformed"),
            CommandError::Parameter(text) => (555, "5.5.4", text),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, enhanced, text) = self.reply();
        write!(f, "{code} {enhanced} {text}")
    }
}

impl std::error::Error for CommandError {}

/// Longest address accepted (RFC 5321 §4.5.3.1.3: a path of 256 octets with its brackets).
const MAX_ADDRESS: usize = 254;

/// Parses one command line, its CRLF already removed.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    if line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(CommandError::ControlCharacter);
    }
    let text = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(CommandError::Empty);
    }
    let (verb, arg) = match text.find([' ', '\t']) {
        Some(i) => (&text[..i], text[i..].trim_matches([' ', '\t'])),
        None => (text, ""),
    };
    let verb_is = |v: &str| verb.eq_ignore_ascii_case(v);
    if verb_is("EHLO") || verb_is("HELO") {
        if arg.is_empty() {
            return Err(CommandError::MissingDomain);
        }
        return Ok(Command::Hello {
            extended: verb_is("EHLO"),
            domain: arg.chars().take(255).collect(),
        });
    }
    if verb_is("MAIL") {
        return mail(arg);
    }
    if verb_is("RCPT") {
        return rcpt(arg);
    }
    if verb_is("AUTH") {
        let (mechanism, initial) = match arg.split_once([' ', '\t']) {
            Some((m, i)) => (m, Some(i.trim_matches([' ', '\t']).to_string())),
            None => (arg, None),
        };
        if mechanism.is_empty() {
            return Err(CommandError::Syntax(
                "syntax: AUTH mechanism [initial-response]",
            ));
        }
        return Ok(Command::Auth {
            mechanism: mechanism.to_ascii_uppercase(),
            initial,
        });
    }
    let no_argument = |command: Command, syntax: &'static str| {
        if arg.is_empty() {
            Ok(command)
        } else {
            Err(CommandError::Syntax(syntax))
        }
    };
    if verb_is("DATA") {
        no_argument(Command::Data, "syntax: DATA (no argument)")
    } else if verb_is("RSET") {
        no_argument(Command::Rset, "syntax: RSET (no argument)")
    } else if verb_is("QUIT") {
        no_argument(Command::Quit, "syntax: QUIT (no argument)")
    } else if verb_is("STARTTLS") {
        no_argument(Command::StartTls, "syntax: STARTTLS (no argument)")
    } else if verb_is("NOOP") {
        Ok(Command::Noop)
    } else if verb_is("HELP") {
        Ok(Command::Help)
    } else if verb_is("VRFY") || verb_is("EXPN") {
        Ok(Command::Verify)
    } else {
        Err(CommandError::Unrecognized)
    }
}

fn mail(arg: &str) -> Result<Command, CommandError> {
    const SYNTAX: CommandError = CommandError::Syntax("syntax: MAIL FROM:<address> [parameters]");
    let rest = strip_prefix_ci(arg, "FROM:").ok_or(SYNTAX)?;
    let (sender, params) = parse_path(rest).ok_or(SYNTAX)?;
    if !sender.is_empty() && !valid_mailbox(&sender) {
        return Err(CommandError::BadSender);
    }
    let mut parsed = MailParams::default();
    for p in params.split([' ', '\t']).filter(|p| !p.is_empty()) {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            let size = value
                .parse::<u64>()
                .map_err(|_| CommandError::Parameter("SIZE needs a number"))?;
            parsed.size = Some(size);
        } else if key.eq_ignore_ascii_case("BODY") {
            parsed.body = Some(if value.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if value.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(CommandError::Parameter("BODY must be 7BIT or 8BITMIME"));
            });
        } else if key.eq_ignore_ascii_case("SMTPUTF8") && value.is_empty() {
            parsed.smtputf8 = true;
        } else if key.eq_ignore_ascii_case("AUTH") {
            parsed.auth = true;
        } else {
            return Err(CommandError::Parameter("unsupported MAIL parameter"));
        }
    }
    Ok(Command::Mail {
        sender,
        params: parsed,
    })
}

fn rcpt(arg: &str) -> Result<Command, CommandError> {
    const SYNTAX: CommandError = CommandError::Syntax("syntax: RCPT TO:<address>");
    let rest = strip_prefix_ci(arg, "TO:").ok_or(SYNTAX)?;
    let (recipient, params) = parse_path(rest).ok_or(SYNTAX)?;
    if !params.trim_matches([' ', '\t']).is_empty() {
        return Err(CommandError::Parameter("unsupported RCPT parameter"));
    }
    if recipient.is_empty() || !valid_mailbox(&recipient) {
        return Err(CommandError::BadRecipient);
    }
    Ok(Command::Rcpt { recipient })
}

/// `s` without `prefix` (compared without case) and the blanks after it. Works on bytes, so a
/// multi-byte character where the prefix would end is a mismatch, not a panic.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    // The prefix is ASCII and matched, so its end is a character boundary.
    s.get(prefix.len()..)
        .map(|rest| rest.trim_start_matches([' ', '\t']))
}

/// `<path> params` → (address, params). Source routes (`<@a,@b:user@d>`) are stripped.
fn parse_path(s: &str) -> Option<(String, &str)> {
    let rest = s.trim_start_matches([' ', '\t']).strip_prefix('<')?;
    let (inner, params) = rest.split_once('>')?;
    let inner = match inner.rsplit_once(':') {
        Some((_, mailbox)) if inner.starts_with('@') => mailbox,
        _ => inner,
    };
    Some((inner.to_string(), params))
}

/// A mailbox we can route: `local@domain` without blanks, brackets or controls, or the bare
/// `postmaster` of RFC 5321 §4.5.1.
pub fn valid_mailbox(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && a.len() <= MAX_ADDRESS
                && !a
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        }
        None => is_bare_postmaster(a),
    }
}

/// `postmaster` without a domain, in any case (RFC 5321 §4.5.1).
pub fn is_bare_postmaster(a: &str) -> bool {
    a.eq_ignore_ascii_case("postmaster")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("<a@b.example> SIZE=10"),
            Some(("a@b.example".into(), " SIZE=10"))
        );
        assert_eq!(parse_path("<>").map(|p| p.0), Some(String::new()));
        assert_eq!(
            parse_path("<@relay.example:a@b.example>").map(|p| p.0),
            Some("a@b.example".into())
        );
        assert!(parse_path("a@b.example").is_none());
        assert!(valid_mailbox("Postmaster"));
        assert!(!valid_mailbox("no-at"));
    }

    #[test]
    fn a_multibyte_character_where_a_prefix_ends_is_a_syntax_error() {
        // "FROM" followed by a two-byte character: byte 5 is inside it.
        for line in [
            "MAIL FROMé<a@b.example>",
            "RCPT TOé<a@b.example>",
            "MAIL é",
            "RCPT ü",
        ] {
            let got = parse(line.as_bytes());
            assert!(
                matches!(got, Err(CommandError::Syntax(_))),
                "{line}: {got:?}"
            );
        }
    }

    #[test]
    fn commands_and_parameters() {
        assert_eq!(
            parse(b"mail from:<a@b.example> size=10 BODY=8bitmime SMTPUTF8"),
            Ok(Command::Mail {
                sender: "a@b.example".into(),
                params: MailParams {
                    size: Some(10),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    auth: false,
                },
            })
        );
        assert_eq!(
            parse("RCPT TO:<ü@b.example>".as_bytes()),
            Ok(Command::Rcpt {
                recipient: "ü@b.example".into()
            })
        );
        assert_eq!(
            parse(b"DATA x"),
            Err(CommandError::Syntax("syntax: DATA (no argument)"))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b> \rRCPT"),
            Err(CommandError::ControlCharacter)
        );
        assert_eq!(parse(b"\xff\xfe"), Err(CommandError::NotUtf8));
        assert_eq!(parse(b"   "), Err(CommandError::Empty));
        assert_eq!(
            parse(b"RCPT TO:<a@b.example> NOTIFY=NEVER"),
            Err(CommandError::Parameter("unsupported RCPT parameter"))
        );
    }
}

//! Blocking file work for the policy: the view its conditions read, and copies of a message
//! with the header changes of non-terminal actions (added fields, a tagged subject).

use std::io::{self, BufReader, Read, Write};

use policy::limits::first_cut;
use policy::{Cut, Limits, MessageView};
use store::{Body, Finished, Spool};

use transform::read_head;

/// Header changes accumulated from matching rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Fields added on top, in rule order.
    pub headers: Vec<(String, String)>,
    /// Tags put in front of the subject, in rule order.
    pub tags: Vec<String>,
    /// Fields removed (the gateway's own verdict fields, forged by a sender).
    pub remove: Vec<String>,
}

impl Changes {
    /// True when the message is delivered as it is.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.tags.is_empty() && self.remove.is_empty()
    }
}

/// How much of a message is read before looking for a part or depth limit.
const PROBE_BYTES: usize = 1 << 20;

/// The policy's view of `body`: the first `limit` bytes are scanned (a larger
/// message's tail is not; its size still counts in full), within `limits`; the view says when
/// either cut the scan. When the policy looks at no content (`content` false: no body or
/// attachment condition), only the header section is read.
pub fn view(body: &Body, limit: u64, limits: &Limits, content: bool) -> io::Result<MessageView> {
    let file = body.open()?;
    let size = body.len();
    let raw = if content {
        // The first megabyte alone when a part or depth limit is reached in it (a cut found in
        // a prefix is the message's own): many tiny parts then cost no large buffer.
        let wanted = size.min(limit) as usize;
        let mut file = file.take(limit);
        let mut raw = Vec::with_capacity(wanted.min(PROBE_BYTES));
        (&mut file).take(PROBE_BYTES as u64).read_to_end(&mut raw)?;
        if wanted > raw.len() && first_cut(&raw, limits).is_none() {
            raw.reserve_exact(wanted - raw.len());
            file.read_to_end(&mut raw)?;
        }
        raw
    } else {
        read_head(body)?
    };
    let mut view = MessageView::parse_with(&raw, limits);
    view.size = size;
    if content && size > limit {
        view.cut.get_or_insert(Cut::Bytes(limit));
    }
    Ok(view)
}

/// Copies `source` into a new spool file with `changes` applied to its header section; the
/// body is streamed unchanged. The copy is fsynced (it becomes a queued message).
pub fn copy_with_changes(source: &Body, changes: &Changes, spool: &Spool) -> io::Result<Finished> {
    let head = read_head(source)?;
    let mut out = spool.create()?;
    let mut top = String::new();
    for (name, value) in &changes.headers {
        top.push_str(&format!("{name}: {}\r\n", one_line(value)));
    }
    out.write_all(top.as_bytes())?;
    let names: Vec<&str> = changes.remove.iter().map(String::as_str).collect();
    let kept = mime::headers::without_fields(&head, &names);
    out.write_all(&tag_subject(&kept, &changes.tags))?;
    let mut rest = BufReader::new(source.open()?);
    io::copy(&mut (&mut rest).take(head.len() as u64), &mut io::sink())?;
    io::copy(&mut rest, &mut out)?;
    out.finish()
}

/// The header section with `tags` in front of the subject (a Subject field is added when the
/// message has none). A tag already there is not added twice.
fn tag_subject(head: &[u8], tags: &[String]) -> Vec<u8> {
    if tags.is_empty() {
        return head.to_vec();
    }
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut tagged = false;
    let mut rest = head;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let is_subject = line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:");
        let is_end = line == b"\r\n" || line == b"\n";
        if is_subject && !tagged {
            let value = String::from_utf8_lossy(&line[8..]);
            let value = value.trim_start();
            let mut prefix = String::new();
            for t in tags {
                if !value.contains(t.as_str()) {
                    prefix.push_str(t);
                    prefix.push(' ');
                }
            }
            out.extend_from_slice(b"Subject: ");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(value.as_bytes());
            tagged = true;
            continue;
        }
        if is_end && !tagged {
            out.extend_from_slice(format!("Subject: {}\r\n", tags.join(" ")).as_bytes());
            tagged = true;
        }
        out.extend_from_slice(line);
    }
    out
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The gateway's view says which limit cut the scan: the part limit found in the first
    /// megabyte of a 100,000-part message (8.5 MB, not read further), the byte limit for a long
    /// message, none for a message within both or when only the header section is read.
    #[test]
    fn the_view_says_which_limit_cut_the_scan() {
        let mut many =
            b"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for i in 0..100_000 {
            many.extend(
                format!("--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\npart {i:06} of a message of many\r\n")
                    .as_bytes(),
            );
        }
        many.extend(b"--b--\r\n");
        let path = Body::from_bytes(many.clone());
        let limits = Limits::default();
        let seen = view(&path, 10 << 20, &limits, true).unwrap();
        assert_eq!(seen.cut, Some(Cut::Parts(1000)));
        assert_eq!(seen.size, many.len() as u64);
        assert_eq!(seen.body.matches("part ").count(), 999);
        assert_eq!(view(&path, 10 << 20, &limits, false).unwrap().cut, None);

        let long = format!("Subject: long\r\n\r\n{}", "0123456789\r\n".repeat(1000));
        let path = Body::from_bytes(long.into_bytes());
        assert_eq!(
            view(&path, 4096, &limits, true).unwrap().cut,
            Some(Cut::Bytes(4096))
        );
        assert_eq!(view(&path, 1 << 20, &limits, true).unwrap().cut, None);
    }

    #[test]
    fn subjects_are_tagged_once_and_added_when_missing() {
        let head = b"From: a@x.example\r\nSubject: Hello\r\n world\r\n\r\n";
        let out = tag_subject(head, &["[SECURE]".into()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@x.example\r\nSubject: [SECURE] Hello\r\n world\r\n\r\n"
        );
        let again = tag_subject(b"Subject: [SECURE] Hi\r\n\r\n", &["[SECURE]".into()]);
        assert_eq!(again, b"Subject: [SECURE] Hi\r\n\r\n");
        let none = tag_subject(b"From: a@x.example\r\n\r\n", &["[X]".into()]);
        assert_eq!(none, b"From: a@x.example\r\nSubject: [X]\r\n\r\n");
    }

    #[test]
    fn a_copy_carries_the_changes_and_the_body_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let src =
            Body::from_bytes(&b"Subject: Q3\r\nFrom: a@x.example\r\n\r\nbody line\r\nmore\r\n"[..]);
        let changes = Changes {
            headers: vec![("X-Class".into(), "secret\r\nBcc: evil".into())],
            tags: vec!["[C]".into()],
            remove: vec!["x-postern-signature".into()],
        };
        let copy = copy_with_changes(&src, &changes, &spool).unwrap();
        let text = String::from_utf8(copy.body().to_vec().unwrap()).unwrap();
        assert_eq!(
            text,
            "X-Class: secret  Bcc: evil\r\nSubject: [C] Q3\r\nFrom: a@x.example\r\n\r\nbody line\r\nmore\r\n"
        );
    }
}

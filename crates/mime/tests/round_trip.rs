//! The encrypted email as other software sees it: a MIME message whose attachment holds the
//! sealed bytes once, readable back whether streamed or re-encoded on the way; and the notice
//! put into a decrypted message without breaking its structure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};

use base64::Engine;
use mail_parser::MimeHeaders;
use mime::{Base64Lines, MimeSettings, SealedReader, add_notice, sealed_from_mime, wrapper};

const ORIGINAL: &[u8] = b"From: Alice <alice@corp.example>\r\nTo: bob@partner.example\r\nCc: carol@partner.example\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@corp.example>\r\nIn-Reply-To: <m0@partner.example>\r\nReferences: <m0@partner.example>\r\nX-Secret-Project: apollo\r\n\r\nbody\r\n";

fn encrypted(sealed: &[u8], settings: &MimeSettings) -> Vec<u8> {
    let w = wrapper(ORIGINAL, false, settings, "gw.corp.example");
    let mut out = w.head.clone();
    let mut b64 = Base64Lines::new(&mut out);
    b64.write_all(sealed).unwrap();
    b64.finish().unwrap();
    out.extend_from_slice(&w.tail(None));
    out
}

fn sealed_bytes() -> Vec<u8> {
    (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn outer_headers_are_kept_and_the_rest_stays_inside() {
    let email = encrypted(&sealed_bytes(), &MimeSettings::default());
    let text = String::from_utf8(email.clone()).unwrap();
    for kept in [
        "From: Alice <alice@corp.example>\r\n",
        "To: bob@partner.example\r\n",
        "Cc: carol@partner.example\r\n",
        "Subject: =?utf-8?q?caf=C3=A9?=\r\n",
        "Message-ID: <m1@corp.example>\r\n",
        "In-Reply-To: <m0@partner.example>\r\n",
        "References: <m0@partner.example>\r\n",
        "X-PP-ENCRYPTED: TRUE\r\n",
        "X-Postern-Encrypted: gw.corp.example\r\n",
    ] {
        assert!(text.contains(kept), "missing {kept:?}");
    }
    assert!(!text.contains("X-Secret-Project"));
    assert!(text.contains("action=\"http://127.0.0.1:8080/read\""));
    assert!(text.contains("Content-Transfer-Encoding: 7bit\r\n\r\n<!DOCTYPE html>"));
    assert!(text.lines().all(|l| l.len() <= 998));
    assert!(email.is_ascii());

    // A MIME parser sees the notice and one attachment named encrypted_message.htm.
    let parsed = mail_parser::MessageParser::default().parse(&email).unwrap();
    assert_eq!(parsed.attachment_count(), 1);
    let att = parsed.attachment(0).unwrap();
    assert_eq!(att.attachment_name(), Some("encrypted_message.htm"));
    assert!(parsed.body_text(0).unwrap().contains("encrypted message"));
}

#[test]
fn the_subject_can_be_replaced_and_the_header_left_out() {
    let settings = MimeSettings {
        replace_subject: Some("Message chiffré".into()),
        add_encryption_header: false,
        ..MimeSettings::default()
    };
    let email = encrypted(b"x", &settings);
    let text = String::from_utf8(email.clone()).unwrap();
    // RFC 2047 encoded words (mail-builder picks Q or B by the text), read back as written.
    assert!(text.contains("Subject: =?utf-8?"), "{text}");
    let parsed = mail_parser::MessageParser::default().parse(&email).unwrap();
    assert_eq!(parsed.subject(), Some("Message chiffré"));
    assert!(!text.contains("caf=C3=A9"));
    assert!(!text.contains("X-Postern-Encrypted"));
    assert!(text.contains("X-PP-ENCRYPTED: TRUE"));
}

#[test]
fn the_sealed_message_reads_back_streamed_and_after_re_encoding() {
    let sealed = sealed_bytes();
    let email = encrypted(&sealed, &MimeSettings::default());
    let mut back = Vec::new();
    SealedReader::new(&email[..])
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, sealed);
    assert_eq!(sealed_from_mime(&email).unwrap(), sealed);

    // An MTA re-encoded the attachment as base64: streaming finds nothing, MIME still does.
    let text = String::from_utf8(email).unwrap();
    let start = text.find("<!DOCTYPE html>\r\n<html lang").unwrap();
    let end = text.rfind("\r\n\r\n--=_postern_").unwrap();
    let page = &text[start..end];
    let encoded = base64::engine::general_purpose::STANDARD.encode(page.as_bytes());
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let reencoded = format!(
        "{}{}\r\n{}",
        text[..start].replace(
            "Content-Transfer-Encoding: 7bit\r\n\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ),
        lines.join("\r\n"),
        &text[end..]
    );
    let mut streamed = Vec::new();
    assert!(
        SealedReader::new(reencoded.as_bytes())
            .read_to_end(&mut streamed)
            .is_err()
    );
    assert_eq!(sealed_from_mime(reencoded.as_bytes()).unwrap(), sealed);

    // Cut short: an error, never a partial message taken for whole.
    let cut = &text.as_bytes()[..text.find("-----END").unwrap()];
    let mut partial = Vec::new();
    assert!(SealedReader::new(cut).read_to_end(&mut partial).is_err());
    assert!(sealed_from_mime(cut).is_err());
}

#[test]
fn the_decryption_notice_goes_into_both_alternatives_and_keeps_the_structure() {
    let message = b"From: a@corp.example\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 tomorrow?\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPGh0bWw+PGJvZHk+PHA+Q2Fmw6kgdG9tb3Jyb3c/PC9wPjwvYm9keT48L2h0bWw+\r\n--alt--\r\n--outer\r\nContent-Type: text/plain; name=\"notes.txt\"\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n\r\nattachment text\r\n--outer--\r\n";
    let notice = "Decrypted by the gateway for scanning.";
    let out = add_notice(message, notice);
    let parsed = mail_parser::MessageParser::default().parse(&out).unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(text.starts_with(notice), "{text}");
    assert!(text.contains("Café tomorrow?"));
    let html = parsed.body_html(0).unwrap();
    assert!(
        html.contains(notice) && html.contains("Café tomorrow?"),
        "{html}"
    );
    assert!(html.find(notice).unwrap() > html.find("<body>").unwrap());
    // The attachment is untouched, and so is every part's framing.
    assert_eq!(parsed.attachment_count(), 1);
    assert!(String::from_utf8_lossy(&out).contains("\r\n\r\nattachment text\r\n--outer--\r\n"));
    assert_eq!(
        String::from_utf8_lossy(&out).matches("--alt").count(),
        String::from_utf8_lossy(message).matches("--alt").count()
    );
}

#[test]
fn a_plain_message_gets_the_notice_once() {
    let message = b"Subject: hi\r\n\r\nhello\r\n";
    let out = add_notice(message, "NOTICE");
    assert_eq!(out, b"Subject: hi\r\n\r\nNOTICE\r\n\r\nhello\r\n");
}

#[test]
fn guarded_headers_are_stripped_and_a_header_too_long_to_check_is_refused() {
    let names = vec!["X-Postern-Signature".to_string()];
    let mut f = mime::HeaderFilter::new(Vec::new(), names.clone(), 1024);
    f.write_all(b"X-Postern-Signature: valid; signer=ceo@corp.example\r\nSubject: hi\r\n\r\nX-Postern-Signature: in the body stays\r\n")
        .unwrap();
    assert_eq!(
        f.finish().unwrap(),
        b"Subject: hi\r\n\r\nX-Postern-Signature: in the body stays\r\n".to_vec()
    );
    // A forged field hidden past the limit cannot slip through unfiltered.
    let mut f = mime::HeaderFilter::new(Vec::new(), names, 1024);
    let mut long = Vec::new();
    for i in 0..100 {
        long.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "x".repeat(40)).as_bytes());
    }
    long.extend_from_slice(b"X-Postern-Signature: valid; signer=ceo@corp.example\r\n\r\nbody\r\n");
    let refused = long
        .chunks(512)
        .try_for_each(|c| f.write_all(c))
        .and_then(|_| f.finish().map(|_| ()));
    assert!(refused.is_err());
    // Given whole, the same header is checked to its end and the field removed.
    let mut f = mime::HeaderFilter::new(Vec::new(), vec!["X-Postern-Signature".into()], 1024);
    f.write_all(&long).unwrap();
    let out = f.finish().unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("X-Postern-Signature"));
}

/// `email` attached to a forward as `message/rfc822`, base64-encoded as phones send it.
fn forwarded(email: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(email);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: bob@partner.example\r\nTo: decrypt@corp.example\r\nSubject: Fwd: Plans\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"f\"\r\n\r\n\
         --f\r\nContent-Type: text/plain\r\n\r\nSent from my phone\r\n\
         --f\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--f--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

#[test]
fn a_forward_carrying_the_encrypted_email_as_an_attachment_still_yields_the_sealed_message() {
    let sealed = sealed_bytes();
    let email = encrypted(&sealed, &MimeSettings::default());
    let fwd = forwarded(&email);
    assert_eq!(sealed_from_mime(&fwd).unwrap(), sealed);
    // Twice forwarded.
    assert_eq!(sealed_from_mime(&forwarded(&fwd)).unwrap(), sealed);
    assert!(mime::kept_token(&fwd).is_none());
}

#[test]
fn a_link_to_a_kept_message_is_found_in_a_forward_and_nothing_else_counts() {
    let token = "ab".repeat(32);
    let url = format!("https://gw.corp.example/read/kept/{token}");
    let email = mime::linked(
        b"From: alice@corp.example\r\nTo: bob@partner.example\r\nSubject: Big\r\n\r\n",
        false,
        &MimeSettings::default(),
        "gw.corp.example",
        &url,
        "2026-12-24 10:00 UTC",
    );
    assert_eq!(mime::kept_token(&email).as_deref(), Some(token.as_str()));
    assert_eq!(
        mime::kept_token(&forwarded(&email)).as_deref(),
        Some(token.as_str())
    );
    // Too short, too long or not hex: not a token.
    for body in [
        format!("see /kept/{}", &token[..63]),
        format!("see /kept/{token}0"),
        format!("see /kept/{}", "zz".repeat(32)),
    ] {
        let m = format!("Subject: x\r\nContent-Type: text/plain\r\n\r\n{body}\r\n");
        assert!(mime::kept_token(m.as_bytes()).is_none(), "{body}");
    }
}

#[test]
fn the_gateways_mark_follows_the_sealed_message_streamed_forwarded_and_quoted_printable() {
    let sealed = sealed_bytes();
    let mark = "0123456789abcdef".repeat(4);
    let w = wrapper(ORIGINAL, false, &MimeSettings::default(), "gw.corp.example");
    let mut email = w.head.clone();
    let mut b64 = Base64Lines::new(&mut email);
    b64.write_all(&sealed).unwrap();
    b64.finish().unwrap();
    email.extend_from_slice(&w.tail(Some(&mark)));

    // Streamed: the mark is there once the sealed message has been read, not before.
    let mut reader = SealedReader::new(&email[..]);
    assert_eq!(reader.mark(), None);
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert_eq!(back, sealed);
    assert_eq!(reader.mark().as_deref(), Some(mark.as_str()));

    // Read as MIME, in the email and in a forward of it.
    for e in [
        email.clone(),
        forwarded(&email),
        forwarded(&forwarded(&email)),
    ] {
        let (s, m) = mime::sealed_and_mark_from_mime(&e).unwrap();
        assert_eq!(s, sealed);
        assert_eq!(m.as_deref(), Some(mark.as_str()));
    }
    // The page still posts the same form, with the mark as one more hidden field.
    let text = String::from_utf8(email.clone()).unwrap();
    assert!(text.contains(&format!(
        "<input type=\"hidden\" name=\"mark\" value=\"{mark}\">"
    )));

    // An MTA re-encoded the page as quoted-printable (`name=3D"mark"`): MIME still reads it.
    let start = text.find("<!DOCTYPE html>\r\n<html lang").unwrap();
    let end = text.rfind("\r\n\r\n--=_postern_").unwrap();
    let qp = format!(
        "{}{}{}",
        text[..start]
            .strip_suffix("Content-Transfer-Encoding: 7bit\r\n\r\n")
            .map(|h| format!("{h}Content-Transfer-Encoding: quoted-printable\r\n\r\n"))
            .unwrap(),
        text[start..end].replace('=', "=3D"),
        &text[end..]
    );
    assert!(qp.contains("name=3D\"mark\""));
    let (s, m) = mime::sealed_and_mark_from_mime(qp.as_bytes()).unwrap();
    assert_eq!(s, sealed);
    assert_eq!(m.as_deref(), Some(mark.as_str()));

    // No mark given, none written or found; a mark that is not hex is not written.
    for given in [None, Some("<script>")] {
        let mut plain = w.head.clone();
        let mut b64 = Base64Lines::new(&mut plain);
        b64.write_all(&sealed).unwrap();
        b64.finish().unwrap();
        plain.extend_from_slice(&w.tail(given));
        assert!(!String::from_utf8_lossy(&plain).contains("name=\"mark\""));
        assert_eq!(mime::sealed_and_mark_from_mime(&plain).unwrap().1, None);
        let mut reader = SealedReader::new(&plain[..]);
        reader.read_to_end(&mut Vec::new()).unwrap();
        assert_eq!(reader.mark(), None);
    }

    // The mark must follow the sealed message closely; one far below does not count.
    let far = text.replace(
        "<input type=\"hidden\" name=\"mark\"",
        &format!("{}<input type=\"hidden\" name=\"mark\"", " ".repeat(600)),
    );
    assert_eq!(
        mime::sealed_and_mark_from_mime(far.as_bytes()).unwrap().1,
        None
    );
}

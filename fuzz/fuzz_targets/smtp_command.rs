//! Feeds arbitrary bytes to the SMTP session's command parser, and the same bytes as message
//! text to the DATA decoder in both modes: replies and lines, never a panic. The decoder must
//! also never take a line for the end of the text unless it is exactly `.` CRLF after CRLF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp::data::{BareNewlines, Decoder, Line};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Err(e) = smtp::command::parse(line) {
            let _ = e.reply();
        }
    }
    for mode in [BareNewlines::Reject, BareNewlines::Normalize] {
        let mut decoder = Decoder::new(mode);
        let mut after_crlf = true;
        for raw in data.split_inclusive(|&b| b == b'\n') {
            let end = decoder.line(raw);
            assert_eq!(end == Line::End, after_crlf && raw == b".\r\n");
            if let Line::Text(text) = &end
                && mode == BareNewlines::Normalize
            {
                // Nothing stored keeps a bare CR or LF.
                let mut prev = 0u8;
                for (i, &b) in text.iter().enumerate() {
                    assert!(b != b'\r' || text.get(i + 1) == Some(&b'\n'));
                    assert!(b != b'\n' || prev == b'\r');
                    prev = b;
                }
            }
            after_crlf = raw.ends_with(b"\r\n");
            if end == Line::End {
                break;
            }
        }
    }
});

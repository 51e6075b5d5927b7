//! The commands' standard output. A reader that stops early (`postern queue list | head`)
//! closes the pipe, and `println!` would then panic; commands write with [`outln!`] and
//! [`out!`] (or through [`Guarded`]) instead, and a closed pipe ends the command quietly: see
//! [`closed`].

use std::fmt;
use std::io::{self, Write};

/// Standard output was closed by its reader: what it wanted is written, nothing failed.
#[derive(Debug)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for Closed {}

/// A writer to standard output whose broken-pipe errors carry [`Closed`], so that [`closed`]
/// tells them from a broken connection elsewhere.
pub struct Guarded<W>(pub W);

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, Closed)
    } else {
        e
    }
}

/// Standard output, guarded.
pub fn stdout() -> Guarded<io::StdoutLock<'static>> {
    Guarded(io::stdout().lock())
}

/// Writes `args` to standard output.
pub fn write(args: fmt::Arguments<'_>) -> io::Result<()> {
    stdout().write_fmt(args)
}

/// The command stopped because its reader closed standard output.
pub fn closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Closed>()
            || c.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<Closed>())
    })
}

/// `println!` that returns an `io::Result` instead of panicking when the reader has gone.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!`, the same way.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_told_from_other_errors() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = Guarded(Gone).write_all(b"x").unwrap_err();
        assert!(closed(&anyhow::Error::from(e).context("listing")));
        let other = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(
            !closed(&anyhow::Error::from(other)),
            "a socket's broken pipe"
        );
    }
}

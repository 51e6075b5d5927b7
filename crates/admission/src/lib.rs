//! Who gets a connection on Postern's listeners (SMTP and web): slots capped in total and per
//! client address, room made by closing a waiting connection of the host that holds the most, and the process's
//! file handles shared out so that one listener's flood cannot stop another.

pub mod files;
pub mod slots;

pub use slots::{Admission, Refused, Slot};

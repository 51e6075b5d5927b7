//! Postern's cryptographic core: identities and epochs, master and user keys, and the sealed
//! message.
//!
//! A *sealed message* carries an email, byte for byte, to one or more identities (an address
//! and a UTC month) with identity-based encryption: anyone with the public parameters can seal
//! to any address; only the holder of that address's key for that month can open. Each sealed
//! message is signed by its sender's identity (or the gateway's default sender).
//!
//! ```no_run
//! # fn demo(params: &envelope::PublicParams, signer: &envelope::SigningKey,
//! #         key: &envelope::DecryptionKey) -> Result<(), Box<dyn std::error::Error>> {
//! use envelope::{Address, Epoch, Opener, SealOptions, Sealer};
//! let options = SealOptions {
//!     recipients: vec![Address::parse("bob@partner.example")?],
//!     epoch: Epoch::current(),
//!     sender: None,
//! };
//! let mut sealed = Vec::new();
//! Sealer::new(params).seal(signer, &options, &b"Subject: hi\r\n\r\nhello\r\n"[..], &mut sealed)?;
//! let mut plain = Vec::new();
//! let opened = Opener::new(params).open(key, &sealed[..], &mut plain)?;
//! println!("{}", opened.verdict);
//! # Ok(()) }
//! ```
//!
//! This crate does no I/O of its own: it reads and writes the `Read`/`Write` values it is given.
//! The byte layout is specified in `docs/envelope-format.md`.

pub mod cache;
mod error;
mod header;
mod identity;
pub mod keys;
mod open;
mod seal;
mod stream;
pub mod vault;
mod wire;

pub use cache::{DecapsCache, EncapsCache};
pub use error::{
    AddressError, EpochError, KeyError, OpenError, SealError, VaultError, io_is_transient,
};
pub use header::{Header, MAX_RECIPIENTS, Recipient};
pub use identity::{Address, Epoch, Identity};
pub use keys::{
    DecryptionKey, KeyId, MasterKeys, MasterPublicKey, MasterSecretKey, PublicParams, SigningKey,
};
pub use open::{InvalidSignature, Opened, Opener, Verdict, read_header};
pub use seal::{SealOptions, SealReport, Sealer};

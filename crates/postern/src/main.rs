//! `postern`: the email encryption gateway's command line.

mod files;
mod keys_cmd;
mod passphrase;
mod seal_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Postern: an email encryption gateway with identity-based encryption.
#[derive(Parser, Debug)]
#[command(name = "postern", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage master keys and issue user keys (the key server's offline tools).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Seal a message to one or more recipients.
    Seal(SealArgs),
    /// Open a sealed message with a decryption key.
    Open(OpenArgs),
    /// Show who a sealed message is from and for, or what a key file holds, without opening it.
    Inspect(InspectArgs),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create the master keys, sealed with a passphrase, and the public parameters.
    Init(InitArgs),
    /// Extract a user's decryption or signing key for one month.
    Issue(IssueArgs),
    /// Add a new master key; new messages use it, old ones still open.
    Rotate(DirArgs),
    /// List the master keys in the public parameters.
    List(DirArgs),
}

#[derive(clap::Args, Debug)]
struct PassphraseArgs {
    /// Read the passphrase from this file (first line). Otherwise POSTERN_PASSPHRASE, otherwise
    /// a prompt at the terminal.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    /// Directory for master.sealed and params.pub (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(clap::Args, Debug)]
struct DirArgs {
    /// Directory holding master.sealed and params.pub.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

/// Which user key to extract.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyKind {
    /// Opens messages sealed to the address.
    Decrypt,
    /// Signs messages as the address.
    Sign,
}

#[derive(clap::Args, Debug)]
struct IssueArgs {
    /// Directory holding master.sealed.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The address the key is for.
    #[arg(long, value_name = "ADDR")]
    email: String,
    /// The month the key is for [default: the current month, UTC].
    #[arg(long, value_name = "YYYY-MM")]
    epoch: Option<String>,
    /// Decryption or signing key.
    #[arg(long, value_enum)]
    kind: KeyKind,
    /// Where to write the key (mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

#[derive(clap::Args, Debug)]
struct SealArgs {
    /// Public parameters (params.pub).
    #[arg(long, value_name = "FILE")]
    params: PathBuf,
    /// The sender's (or default sender's) signing key.
    #[arg(long, value_name = "FILE")]
    sign_key: PathBuf,
    /// A recipient; repeat for more.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// The recipients' month [default: the current month, UTC].
    #[arg(long, value_name = "YYYY-MM")]
    epoch: Option<String>,
    /// The sender, when the signing key is a default sender's [default: the signing key's address].
    #[arg(long, value_name = "ADDR")]
    from: Option<String>,
    /// The message to seal [default: standard input].
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Where to write the sealed message [default: standard output].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct OpenArgs {
    /// The recipient's decryption key.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Public parameters (params.pub), to verify the signature.
    #[arg(long, value_name = "FILE")]
    params: PathBuf,
    /// The sealed message [default: standard input].
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Where to write the original message [default: standard output]. Nothing is written
    /// unless the whole message opens.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the message even when its signature does not verify (the verdict still says so).
    #[arg(long)]
    allow_invalid_signature: bool,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// A sealed message or a key file [default: standard input].
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(KeysCommand::Init(a)) => keys_cmd::init(&a),
        Command::Keys(KeysCommand::Issue(a)) => keys_cmd::issue(&a),
        Command::Keys(KeysCommand::Rotate(a)) => keys_cmd::rotate(&a),
        Command::Keys(KeysCommand::List(a)) => keys_cmd::list(&a),
        Command::Seal(a) => seal_cmd::seal(&a),
        Command::Open(a) => seal_cmd::open(&a),
        Command::Inspect(a) => seal_cmd::inspect(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain, outermost first.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("postern: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

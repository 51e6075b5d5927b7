//! `postern`: the email encryption gateway's command line.

mod admin_cmd;
mod bench_cmd;
mod code_relay;
mod config;
mod console_config;
mod files;
mod keys_cmd;
mod keyserver_cmd;
mod logging;
mod out;
mod passphrase;
mod policy_cmd;
mod queue_cmd;
mod seal_cmd;
mod serve;
mod supervise;

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
    /// Run the gateway (with no configuration: everything on loopback, state in ./postern-data).
    Serve(ServeArgs),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and act on the mail queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The errored queue: mail waiting for a key (retried automatically; resend by hand here).
    #[command(subcommand)]
    Errored(ErroredCommand),
    /// The content policy: ordered rules, exception rules, notification templates.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Quarantine areas and the messages they hold.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Administrators of the web console (/admin).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// SMTP helpers.
    #[command(subcommand)]
    Smtp(SmtpCommand),
    /// Measure throughput against a baseline taken in the same run (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Make an administrator; the password is read from standard input (asked twice on a
    /// terminal). The gateway must have started once (it makes the database).
    Create {
        /// The login name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Set an administrator's password (read as for create).
    Password {
        /// The login name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List administrators.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// List messages, newest first.
    List {
        /// Only messages in this state (received, processing, queued, transformed, delivered,
        /// bounced, deleted).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show one message and its recipients.
    Show {
        /// The queue id.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Try a message's deferred recipients now.
    Retry {
        /// The queue id.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete a message: it will not be delivered.
    Delete {
        /// The queue id.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// List the rules in force, in order.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the policy in force as a file `import` reads (`postern policy export > policy.toml`).
    Export {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Replace the policy: everything is checked first (an error names the rule and the
    /// field, and nothing changes); the running gateway applies it to the next message.
    Import {
        /// The policy file.
        file: PathBuf,
        /// Recorded as who imported it [default: $USER].
        #[arg(long)]
        author: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check a policy file without storing it.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Show how the policy decides a message: every rule looked at, what matched, the actions.
    Test {
        /// The message (RFC 5322 file).
        message: PathBuf,
        /// Envelope sender.
        #[arg(long, value_name = "ADDR", default_value = "")]
        from: String,
        /// Envelope recipient (repeatable).
        #[arg(long, value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// Test this policy file instead of the stored policy.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Which held messages (every option narrows; text options match parts, ignoring case).
#[derive(clap::Args, Debug)]
struct QuarantineFilterArgs {
    /// The area.
    #[arg(long)]
    area: Option<String>,
    /// Sender contains.
    #[arg(long)]
    sender: Option<String>,
    /// A recipient contains.
    #[arg(long)]
    recipient: Option<String>,
    /// Subject contains.
    #[arg(long)]
    subject: Option<String>,
    /// The rule's name contains.
    #[arg(long)]
    rule: Option<String>,
    /// The reason contains.
    #[arg(long)]
    reason: Option<String>,
    /// Held at or after (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Held before.
    #[arg(long)]
    until: Option<String>,
}

/// Held messages to act on: entries by id, or all a query finds.
#[derive(clap::Args, Debug)]
struct QuarantineSelection {
    /// Entry ids from `query` (repeatable).
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Every message the query options find.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    filter: QuarantineFilterArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand, Debug)]
enum QuarantineCommand {
    /// List the areas with what they hold.
    Areas {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Make an area (or change its retention).
    CreateArea {
        /// Its name.
        name: String,
        /// Days a held message is kept before it is deleted.
        #[arg(long, default_value_t = 30)]
        retention_days: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete an empty area.
    DeleteArea {
        /// Its name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Find held messages, newest first.
    Query {
        #[command(flatten)]
        filter: QuarantineFilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Deliver held messages, skipping the rule that held them.
    Release(QuarantineSelection),
    /// Run the current policy on held messages again.
    Reprocess(QuarantineSelection),
    /// Delete held messages for good.
    Delete(QuarantineSelection),
}

#[derive(Subcommand, Debug)]
enum ErroredCommand {
    /// List messages waiting for a key, oldest first, with each recipient's reason.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Send errored messages back for processing now: one (--id), all (--all), or those
    /// received in a period (--since, --until: YYYY-MM-DD or RFC 3339). The running gateway
    /// picks them up at once.
    Resend {
        /// One message.
        #[arg(long, conflicts_with_all = ["all", "since", "until"])]
        id: Option<String>,
        /// Every errored message.
        #[arg(long, conflicts_with_all = ["since", "until"])]
        all: bool,
        /// Received at or after this time.
        #[arg(long)]
        since: Option<String>,
        /// Received before this time.
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand, Debug)]
enum SmtpCommand {
    /// Print an Argon2 hash of a password (read from standard input) for smtp.users.
    HashPassword,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Keys issued per second by an in-process key server over loopback HTTP, against the raw
    /// extraction rate on all cores.
    Keyserver(BenchKeyserverArgs),
    /// Load an SMTP server: messages per second and transaction latency (p50, p99).
    Smtp(BenchSmtpArgs),
}

#[derive(clap::Args, Debug)]
struct BenchSmtpArgs {
    /// The server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 5000)]
    messages: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// MAIL FROM.
    #[arg(long, default_value = "bench@corp.example")]
    from: String,
    /// RCPT TO.
    #[arg(long, default_value = "sink@partner.example")]
    rcpt: String,
    /// Spread the messages over this many distinct recipients (`r0-` .. `rN-` before the
    /// local part of --rcpt), each message to one of them.
    #[arg(long, default_value_t = 1)]
    recipients: u64,
}

#[derive(clap::Args, Debug)]
struct BenchKeyserverArgs {
    /// Seconds each of the two measurements runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate FILE: every key known, every value in range; names the bad key and why. The
    /// console's changes (DATA_DIR/console.toml) are checked over it, as a start reads them.
    Check {
        /// The postern.toml to check.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct ConfigArgs {
    /// The configuration file [default: POSTERN_CONFIG, else built-in defaults].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory, overriding data_dir of the configuration.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The configuration file [default: POSTERN_CONFIG, else built-in defaults].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory, overriding data_dir of the configuration.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Comma-separated components to run [default: all]. Known: keyserver.
    #[arg(long, value_name = "LIST")]
    components: Option<String>,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a gateway API token for one or more domains; prints it once.
    Create {
        /// A name to list and revoke it by.
        #[arg(long)]
        name: String,
        /// A domain whose addresses the token may fetch keys for; repeat for more.
        #[arg(long = "domain", value_name = "DOMAIN", required = true)]
        domains: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a token; it stops working at once.
    Revoke {
        /// The token's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// Only rows about this address.
    #[arg(long, value_name = "ADDR")]
    email: Option<String>,
    /// Only rows from this UTC date on.
    #[arg(long, value_name = "YYYY-MM-DD")]
    since: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Args, Debug)]
struct FetchArgs {
    /// The key server's base URL, e.g. https://keys.corp.example:8080.
    #[arg(long, value_name = "URL")]
    server: String,
    /// Your address; a code is sent to it.
    #[arg(long, value_name = "ADDR")]
    email: String,
    /// The local key cache [default: POSTERN_CACHE, else ~/.postern].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Trust only this CA certificate (PEM) for the server.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
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
    /// Manage the key server's gateway API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the key server's audit log of issuances and refusals.
    Audit(AuditArgs),
    /// Prove your address with an emailed code and keep this and last month's keys in a local cache.
    Fetch(FetchArgs),
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
    /// The recipient's decryption key [default: a recipient's key from the local cache].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Public parameters (params.pub), to verify the signature [default: from the local cache].
    #[arg(long, value_name = "FILE")]
    params: Option<PathBuf>,
    /// The local key cache filled by `keys fetch` [default: POSTERN_CACHE, else ~/.postern].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
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

/// Whether an error comes from a file this user may not read.
fn is_permission_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// The configuration file named by `--config`, else by `POSTERN_CONFIG`; none means the
/// built-in defaults.
fn config_file(path: Option<&std::path::Path>) -> Option<PathBuf> {
    path.map(PathBuf::from)
        .or_else(|| std::env::var_os("POSTERN_CONFIG").map(PathBuf::from))
}

/// The configuration file (or the built-in defaults), the data directory if one is given, and
/// the changes saved in the console.
fn load_config(
    path: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<config::Config> {
    console_config::load(config_file(path).as_deref(), data_dir)
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<config::Config> {
        load_config(self.config.as_deref(), self.data_dir.as_deref())
    }
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    out::outln!(
        "{}",
        store::accounts::hash_password(password).map_err(anyhow::Error::msg)?
    )?;
    Ok(())
}

/// A single-threaded runtime for the CLI's network and database commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The local key cache directory of `keys fetch` and `open`.
fn cache_dir(arg: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("POSTERN_CACHE") {
        return Ok(PathBuf::from(p));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".postern")),
        None => anyhow::bail!("no key cache: pass --cache DIR or set POSTERN_CACHE"),
    }
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
        Command::Serve(a) => serve::serve(&a),
        Command::Queue(q) => queue_cmd::run(q),
        Command::Errored(e) => queue_cmd::errored(e),
        Command::Policy(p) => policy_cmd::policy(p),
        Command::Quarantine(q) => policy_cmd::quarantine(q),
        Command::Admin(a) => admin_cmd::admin(a),
        Command::Smtp(SmtpCommand::HashPassword) => hash_password(),
        Command::Bench(BenchCommand::Keyserver(a)) => bench_cmd::keyserver(&a),
        Command::Bench(BenchCommand::Smtp(a)) => bench_cmd::smtp(&a),
        Command::Config(ConfigCommand::Check { file }) => config::Config::load(&file)
            // Then as a start reads it: with the console's changes over it, when this user
            // may read them (the data directory is the gateway's own, mode 0700).
            .and_then(|alone| match console_config::load_reporting(Some(&file), None) {
                Err(e) if is_permission_denied(&e) => {
                    eprintln!(
                        "{}: cannot read {} (permission denied): checked without the console's changes",
                        file.display(),
                        alone.data_dir.join(console_config::FILE).display()
                    );
                    Ok((alone, Vec::new()))
                }
                read => read,
            })
            .and_then(|(c, over)| {
                c.check_plain_http()?;
                if !over.is_empty() {
                    out::outln!(
                        "{}: {} sets {}",
                        file.display(),
                        c.data_dir.join(console_config::FILE).display(),
                        over.join(", ")
                    )?;
                }
                Ok(out::outln!("{}: ok", file.display())?)
            }),
        Command::Keys(KeysCommand::Token(t)) => keyserver_cmd::token(t),
        Command::Keys(KeysCommand::Audit(a)) => keyserver_cmd::audit(&a),
        Command::Keys(KeysCommand::Fetch(a)) => keyserver_cmd::fetch(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output stopped reading (`| head`): nothing went wrong.
        Err(e) if out::closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain, outermost first.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("postern: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

//! `postern admin`: the web console's administrators (Argon2id hashes in the queue database).

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};

use crate::AdminCommand;
use crate::out::outln;
use crate::queue_cmd::open;

/// The password: asked twice on a terminal, else one line of standard input.
fn read_password() -> Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password again: ")?;
        if first != again {
            bail!("the passwords differ; nothing changed");
        }
        return check(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    check(line.trim_end_matches(['\r', '\n']).to_string())
}

fn check(password: String) -> Result<String> {
    let n = password.chars().count();
    if n < web::admin::MIN_PASSWORD {
        bail!(
            "password: {n} characters is too short; use at least {}",
            web::admin::MIN_PASSWORD
        );
    }
    Ok(password)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !ok {
        bail!("name: {name:?} must be 1 to 64 letters, digits, '.', '_', '-' or '@'");
    }
    Ok(())
}

pub fn admin(cmd: AdminCommand) -> Result<()> {
    crate::runtime()?.block_on(async {
        match cmd {
            AdminCommand::Create { name, config } => {
                check_name(&name)?;
                let password = read_password()?;
                let queue = open(&config).await?;
                let hash = web::admin::hash_password(&password).map_err(anyhow::Error::msg)?;
                queue.create_admin(&name, &hash).await?;
                crate::policy_cmd::audit(&queue, "admin.create", &name).await;
                eprintln!("administrator {name} made; sign in at /admin");
            }
            AdminCommand::Password { name, config } => {
                let password = read_password()?;
                let queue = open(&config).await?;
                let hash = web::admin::hash_password(&password).map_err(anyhow::Error::msg)?;
                queue.set_admin_password(&name, &hash).await?;
                crate::policy_cmd::audit(&queue, "admin.password", &name).await;
                eprintln!("password of {name} changed");
            }
            AdminCommand::List { config } => {
                let queue = open(&config).await?;
                for name in queue.admins().await? {
                    outln!("{name}")?;
                }
            }
        }
        Ok(())
    })
}

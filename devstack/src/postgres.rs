//! A real PostgreSQL server in a folder of ours, bootstrapped from
//! `policies/postgres/roles.sql`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{run, Supervised};
use crate::tools::Tools;

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    /// `None` only while [`Postgres::restart`] is between stop and start.
    process: Option<Supervised>,
    tools: Tools,
    opts: PostgresOptions,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Folder holding the server's Unix socket (mode 0700; superuser access
    /// with `peer` auth for the OS user that started devstack).
    pub socket_dir: PathBuf,
    psql: PathBuf,
    run_as: Option<nix::unistd::User>,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Folder for data, socket and log; created if absent, reused if initialised.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Durable writes (fsync). Tests turn this off for speed.
    pub durable: bool,
}

impl Postgres {
    /// Initialises (first time only) and starts the server, then waits until
    /// it accepts connections.
    pub fn start(tools: &Tools, opts: &PostgresOptions) -> anyhow::Result<Self> {
        let data = opts.dir.join("data");
        let socket_dir = opts.dir.join("socket");
        std::fs::create_dir_all(&socket_dir)?;
        // initdb and postgres refuse to run as root: use the `postgres` (or
        // `nobody`) account then, and let it own the folder.
        let run_as = unprivileged_user()?;
        if let Some(user) = &run_as {
            chown_tree(&opts.dir, user)?;
            allow_traverse(&opts.dir, user)?;
        }
        if !data.join("PG_VERSION").exists() {
            let mut initdb = Command::new(tools.pg("initdb"));
            initdb
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                ])
                .args(["--encoding=UTF8", "--locale=C", "--no-instructions"]);
            if !opts.durable {
                initdb.arg("--no-sync");
            }
            as_user(&mut initdb, run_as.as_ref());
            run(&mut initdb).context("initdb failed")?;
        }
        let mut pg = Postgres {
            port: opts.port,
            socket_dir,
            psql: tools.pg("psql"),
            run_as,
            process: None,
            tools: tools.clone(),
            opts: opts.clone(),
        };
        pg.spawn()?;
        Ok(pg)
    }

    /// Writes the auth files, starts the server on the existing data folder
    /// and waits until it accepts queries.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let opts = &self.opts;
        let data = opts.dir.join("data");
        let socket_dir = self.socket_dir.clone();
        write_auth_files(&data, self.run_as.as_ref())?;
        let mut cmd = Command::new(self.tools.pg("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &opts.port.to_string()])
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Only the server's own account may open the socket (devstack's
            // superuser connections run as that account or as root).
            .args(["-c", "unix_socket_permissions=0700"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "password_encryption=scram-sha-256"])
            .args(["-c", "log_connections=off"]);
        if !opts.durable {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        as_user(&mut cmd, self.run_as.as_ref());
        let log = opts.dir.join("postgres.log");
        if let Some(user) = &self.run_as {
            // The log file is created by us; make it writable for the server.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            nix::unistd::chown(&log, Some(user.uid), Some(user.gid))?;
        }
        let mut process = Supervised::spawn("postgres", cmd, &log)?;
        let port = opts.port;
        process.wait_ready(Duration::from_secs(30), || {
            if socket_dir.join(format!(".s.PGSQL.{port}")).exists() {
                Ok(())
            } else {
                Err("socket not there yet".into())
            }
        })?;
        self.process = Some(process);
        // The socket appears slightly before the server accepts queries.
        let mut last = String::new();
        for _ in 0..100 {
            match self.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("postgres never accepted queries: {last}")
    }

    /// Applies `roles.sql` (idempotent) with the OpenBao admin password.
    pub fn apply_roles(
        &self,
        roles_sql: &Path,
        openbao_admin_password: &str,
    ) -> anyhow::Result<()> {
        let sql = std::fs::read_to_string(roles_sql)
            .with_context(|| format!("cannot read {}", roles_sql.display()))?;
        // The password goes through stdin, never the command line.
        let script = format!(
            "\\set openbao_admin_password '{}'\n{sql}",
            openbao_admin_password.replace('\'', "''")
        );
        self.psql_script("postgres", &script)
            .with_context(|| format!("applying {}", roles_sql.display()))?;
        Ok(())
    }

    /// Runs one SQL statement as the superuser and returns psql's unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = self.psql_command(database);
        cmd.args(["-A", "-t", "-c", sql]);
        run(&mut cmd)
    }

    /// Runs a multi-statement psql script (from stdin) as the superuser.
    pub fn psql_script(&self, database: &str, script: &str) -> anyhow::Result<String> {
        let mut cmd = self.psql_command(database);
        cmd.args(["-q", "-A", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot run psql")?;
        child
            .stdin
            .take()
            .context("psql stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(&self.psql);
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-X"])
            .env("PGCONNECT_TIMEOUT", "5");
        cmd
    }

    /// A superuser connection string over the Unix socket (for test assertions).
    pub fn superuser_conn_string(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// The server process (log path, pid).
    pub fn process(&self) -> &Supervised {
        // Invariant: `process` is only `None` inside `restart`, which puts a
        // process back before returning or fails and leaves the old one.
        self.process
            .as_ref()
            .unwrap_or_else(|| unreachable!("postgres process is set outside restart"))
    }

    /// Stops the server (fast shutdown: SIGINT to the postmaster, which ends
    /// every session and checkpoints — what `pg_ctl stop -m fast` does).
    pub fn stop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.stop_with(nix::sys::signal::Signal::SIGINT, Duration::from_secs(10));
        }
    }

    /// Starts a stopped server again on the same data folder and port and
    /// waits until it accepts queries (`stop` then `restart` = `pg_ctl
    /// restart -m fast` with a pause of the caller's choosing).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let old = self.process.take();
        match self.spawn() {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.process.is_none() {
                    self.process = old;
                }
                Err(e)
            }
        }
    }

    /// The OS account the server runs as when we are root.
    pub fn os_user(&self) -> Option<&str> {
        self.run_as.as_ref().map(|u| u.name.as_str())
    }
}

/// Name of the map in `pg_ident.conf` that lets the OS user who runs
/// devstack connect as the `postgres` superuser over the socket.
const IDENT_MAP: &str = "devstack";

/// Writes `pg_hba.conf` and `pg_ident.conf` on every start (so a data folder
/// an older version initialised with `trust` is fixed too): `peer` on the
/// socket for the OS user running devstack (mapped to the superuser), SCRAM
/// over TCP, nothing else.
fn write_auth_files(data: &Path, run_as: Option<&nix::unistd::User>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())?.context(
        "the current user has no name (no passwd entry): PostgreSQL's peer auth needs one",
    )?;
    let hba = format!(
        "# Written by devstack on every start; edits are lost. No `trust` anywhere.\n\
         local all postgres peer map={IDENT_MAP}\n\
         host  all all 127.0.0.1/32 scram-sha-256\n\
         host  all all ::1/128      scram-sha-256\n"
    );
    let mut ident = format!(
        "# Written by devstack on every start.\n{IDENT_MAP} {} postgres\n",
        me.name
    );
    if let Some(u) = run_as {
        ident.push_str(&format!("{IDENT_MAP} {} postgres\n", u.name));
    }
    for (name, text) in [("pg_hba.conf", hba), ("pg_ident.conf", ident)] {
        let path = data.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        if let Some(u) = run_as {
            nix::unistd::chown(&path, Some(u.uid), Some(u.gid))?;
        }
    }
    Ok(())
}

fn unprivileged_user() -> anyhow::Result<Option<nix::unistd::User>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = nix::unistd::User::from_name(name)? {
            return Ok(Some(user));
        }
    }
    bail!("running as root and neither a `postgres` nor a `nobody` account exists for PostgreSQL")
}

fn as_user(cmd: &mut Command, user: Option<&nix::unistd::User>) {
    use std::os::unix::process::CommandExt;
    if let Some(user) = user {
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &user.dir)
            .env("USER", &user.name);
    }
}

fn chown_tree(dir: &Path, user: &nix::unistd::User) -> anyhow::Result<()> {
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            chown_tree(&path, user)?;
        } else {
            nix::unistd::chown(&path, Some(user.uid), Some(user.gid))?;
        }
    }
    Ok(())
}

/// Lets the unprivileged server account reach its folder through our parents
/// (execute-only: it cannot list them). A parent others cannot traverse (the
/// 0700 state folder) gets the account's group and group-execute only, so
/// other users still cannot enter it.
fn allow_traverse(dir: &Path, user: &nix::unistd::User) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut cur = dir.parent();
    while let Some(p) = cur {
        if p == Path::new("/") {
            break;
        }
        let meta = std::fs::metadata(p)?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            if meta.gid() != user.gid.as_raw() {
                nix::unistd::chown(p, None, Some(user.gid))?;
            }
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o010))?;
        }
        cur = p.parent();
    }
    Ok(())
}

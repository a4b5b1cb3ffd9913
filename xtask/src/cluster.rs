//! `cargo xtask cluster up|down|status`: a real one-node Slurm cluster on 127.0.0.1, from
//! Debian's packages, for testing the Slurm executor (and for trying it). Everything it makes
//! lives in one state directory: a munge key and socket, a MariaDB for the accounting daemon (so
//! `sacct` works as on a real cluster), slurm.conf, logs and pid files. Client commands find it
//! through `SLURM_CONF=<state>/slurm.conf`. Nothing outside the state directory is touched.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Debian packages the cluster is made of.
pub const PACKAGES: &[&str] = &[
    "munge",
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "slurm-client",
    "mariadb-server",
];

/// Ports on 127.0.0.1: controller, node daemon, accounting daemon, database.
const PORTS: [u16; 4] = [16817, 16818, 16820, 16819];

/// Daemons in start order, each with its pid file name.
const DAEMONS: [&str; 5] = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"];

pub fn default_state() -> PathBuf {
    crate::project_root().join("target/slurm-cluster")
}

/// The cluster's `SLURM_CONF`.
pub fn conf(state: &Path) -> PathBuf {
    state.join("slurm.conf")
}

fn pid_file(state: &Path, daemon: &str) -> PathBuf {
    state.join("run").join(format!("{daemon}.pid"))
}

fn alive(state: &Path, daemon: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(state, daemon))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_alive(pid)
}

/// `pid` if that process runs. A killed daemon whose parent has not reaped it yet is a zombie:
/// gone for our purposes.
fn process_alive(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    (state != "Z").then_some(pid)
}

/// A started cluster; dropping it stops the daemons this process started (not ones that were
/// already up).
pub struct Cluster {
    pub state: PathBuf,
    started: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            if let Err(e) = down(&self.state) {
                eprintln!("stopping the local Slurm cluster: {e:#}");
            }
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn log_tail(state: &Path, name: &str) -> String {
    crate::log_tail(&state.join("log").join(name), 8)
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            bail!("{what} did not come up within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Whether every daemon of the cluster in `state` is up.
pub fn running(state: &Path) -> bool {
    DAEMONS.iter().all(|d| alive(state, d).is_some())
}

/// Starts the daemons that are not running (installing the packages first if needed, as root).
/// If one fails to come up, the ones already started are stopped again before the error returns,
/// so a failed start leaves no daemon behind.
pub fn up(state: &Path) -> Result<Cluster> {
    if running(state) {
        return Ok(Cluster {
            state: state.to_path_buf(),
            started: false,
        });
    }
    crate::ensure_debian_packages(PACKAGES)?;
    let before: Vec<&str> = DAEMONS
        .into_iter()
        .filter(|d| alive(state, d).is_some())
        .collect();
    start(state).map_err(|err| {
        for daemon in DAEMONS.iter().rev().filter(|d| !before.contains(d)) {
            if let Err(e) = stop(state, daemon) {
                eprintln!("stopping {daemon} after the failed start: {e:#}");
            }
        }
        err
    })?;
    Ok(Cluster {
        state: state.to_path_buf(),
        started: true,
    })
}

fn start(state: &Path) -> Result<()> {
    for d in ["munge", "db", "ctld", "spool", "log", "run"] {
        std::fs::create_dir_all(state.join(d))?;
    }
    let s = state.display().to_string();
    let host = hostname()?;
    let munge_sock = state.join("munge/munge.sock");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(state.join("munge"), std::fs::Permissions::from_mode(0o700))?;
    let key = state.join("munge/munge.key");
    if !key.exists() {
        let mut bytes = vec![0u8; 1024];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        std::fs::write(&key, &bytes)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400))?;
    }
    if alive(state, "munged").is_none() {
        run(
            Command::new("munged").args([
                "--force".into(),
                format!("--key-file={}", key.display()),
                format!("--socket={}", munge_sock.display()),
                format!("--pid-file={s}/run/munged.pid"),
                format!("--log-file={s}/log/munged.log"),
                format!("--seed-file={s}/munge/seed"),
            ]),
            "munged",
        )?;
    }

    // The accounting database.
    let [ctld_port, slurmd_port, dbd_port, db_port] = PORTS;
    if alive(state, "mariadbd").is_none() {
        if !state.join("db/mysql").exists() {
            run(
                Command::new("mariadb-install-db").args([
                    "--user=root".into(),
                    format!("--datadir={s}/db"),
                    "--auth-root-authentication-method=socket".into(),
                    "--skip-test-db".into(),
                ]),
                "mariadb-install-db",
            )?;
        }
        let log = std::fs::File::create(state.join("log/mariadbd.out"))?;
        Command::new("mariadbd")
            .args([
                "--user=root".into(),
                format!("--datadir={s}/db"),
                format!("--socket={s}/run/mysql.sock"),
                format!("--pid-file={s}/run/mariadbd.pid"),
                format!("--port={db_port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--log-error={s}/log/mariadb.log"),
                "--innodb-buffer-pool-size=64M".into(),
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting mariadbd")?;
        let sql = "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; \
                   GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;";
        let mut cmd = Command::new("mariadb");
        cmd.args([
            "-S",
            &format!("{s}/run/mysql.sock"),
            "-u",
            "root",
            "-e",
            sql,
        ]);
        wait_for("mariadbd", Duration::from_secs(60), || {
            cmd.output().map(|o| o.status.success()).unwrap_or(false)
        })
        .with_context(|| format!("mariadb log:\n  {}", log_tail(state, "mariadb.log")))?;
    }

    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(4096, |kb| (kb / 1024).saturating_sub(2048).max(1024));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dbd = format!(
        "AuthType=auth/munge\nAuthInfo=socket={sock}\nDbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={dbd_port}\n\
         SlurmUser=root\nPidFile={s}/run/slurmdbd.pid\nLogFile={s}/log/slurmdbd.log\n\
         StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={db_port}\n\
         StorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct_db\n",
        sock = munge_sock.display()
    );
    let dbd_conf = state.join("slurmdbd.conf");
    std::fs::write(&dbd_conf, dbd)?;
    std::fs::set_permissions(&dbd_conf, std::fs::Permissions::from_mode(0o600))?;
    let slurm = format!(
        "ClusterName=baddiff\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctld_port}\nSlurmdPort={slurmd_port}\n\
         SlurmUser=root\nAuthType=auth/munge\nAuthInfo=socket={sock}\nStateSaveLocation={s}/ctld\n\
         SlurmdSpoolDir={s}/spool\nSlurmctldPidFile={s}/run/slurmctld.pid\nSlurmdPidFile={s}/run/slurmd.pid\n\
         SlurmctldLogFile={s}/log/slurmctld.log\nSlurmdLogFile={s}/log/slurmd.log\n\
         ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core_Memory\nJobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=task=5\n\
         AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n\
         AccountingStoragePort={dbd_port}\nAccountingStoragePass={sock}\nJobRequeue=1\nReturnToService=2\n\
         MpiDefault=none\nMailProg=/bin/true\n\
         NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN\n\
         PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
        sock = munge_sock.display()
    );
    std::fs::write(conf(state), slurm)?;

    let slurm_cmd = |daemon: &str| {
        let mut c = Command::new(daemon);
        c.env("SLURM_CONF", conf(state));
        c
    };
    // Each daemon must accept connections before the next starts: slurmctld exits at once
    // ("we have no TRES") when slurmdbd has written its pid file but is not listening yet.
    for (daemon, port) in [
        ("slurmdbd", dbd_port),
        ("slurmctld", ctld_port),
        ("slurmd", slurmd_port),
    ] {
        if alive(state, daemon).is_none() {
            run(&mut slurm_cmd(daemon), daemon).with_context(|| {
                format!(
                    "{daemon} log:\n  {}",
                    log_tail(state, &format!("{daemon}.log"))
                )
            })?;
            wait_for(daemon, Duration::from_secs(30), || {
                alive(state, daemon).is_some() && listening(port)
            })
            .with_context(|| {
                format!(
                    "{daemon} log:\n  {}",
                    log_tail(state, &format!("{daemon}.log"))
                )
            })?;
        }
    }
    let idle = || {
        slurm_cmd("sinfo")
            .args(["-h", "-o", "%T"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
            .unwrap_or(false)
    };
    wait_for("the Slurm node", Duration::from_secs(60), idle)
        .with_context(|| format!("slurmctld log:\n  {}", log_tail(state, "slurmctld.log")))
}

/// Stops the daemons by their pid files, newest first, and waits for them to exit.
pub fn down(state: &Path) -> Result<()> {
    for daemon in DAEMONS.iter().rev() {
        stop(state, daemon)?;
    }
    Ok(())
}

/// Stops one daemon by its pid file (nothing to do if it is not running).
fn stop(state: &Path, daemon: &str) -> Result<()> {
    let Some(pid) = alive(state, daemon) else {
        return Ok(());
    };
    run(
        Command::new("kill").arg(pid.to_string()),
        &format!("kill {daemon}"),
    )?;
    // Wait for the process, not its pid file: slurmd removes the file first and can linger.
    let gone = || process_alive(pid).is_none();
    if wait_for(&format!("{daemon} to stop"), Duration::from_secs(30), gone).is_err() {
        run(
            Command::new("kill").args(["-KILL", &pid.to_string()]),
            &format!("kill -KILL {daemon}"),
        )?;
        wait_for(
            &format!("{daemon} to be killed"),
            Duration::from_secs(10),
            gone,
        )?;
    }
    Ok(())
}

/// One line per daemon: running (pid) or stopped.
pub fn status(state: &Path) -> String {
    DAEMONS
        .iter()
        .map(|d| match alive(state, d) {
            Some(pid) => format!("{d}: running (pid {pid})"),
            None => format!("{d}: stopped"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hostname() -> Result<String> {
    let out = Command::new("hostname")
        .output()
        .context("running hostname")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

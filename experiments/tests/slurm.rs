//! `experiments paper --slurm` against a real Slurm: a private one-node cluster (munged,
//! slurmctld, slurmd on their own socket, ports and folders) runs the generated scripts end to
//! end on the synthetic layouts with a tiny model. A training task is requeued after its first
//! epoch; the tables must equal those of an in-process `experiments paper` run and the weights
//! must be bit-identical. Skipped, with the reason printed, where the Slurm and MUNGE daemons
//! are not installed (Debian: slurmctld slurmd slurm-client munge; `.ci/run` installs them) or
//! cannot run (not root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_outputs, fixture, paper_args, parse_paper, s, MODELS};
use experiments::reproduction;

/// Epochs of every run: enough that the requeue lands in the middle of one.
const EPOCHS: &str = "30";
/// How long the whole Slurm part may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(300);

/// Why the test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    for tool in [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scontrol",
        "sinfo",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .env("PATH", path_env())
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{tool} not found: install Debian's slurmctld slurmd slurm-client munge (as .ci/run does)"
            ));
        }
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("the Slurm daemons of this test run as root (SlurmUser=root)".into());
    }
    None
}

/// PATH with the system folders the daemons live in.
fn path_env() -> String {
    let p = std::env::var("PATH").unwrap_or_default();
    format!("{p}:/usr/sbin:/usr/bin:/sbin:/bin")
}

/// A free TCP port on localhost.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The private cluster; dropping it cancels every job and stops the daemons.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster, String> {
        for d in ["state", "spool", "log", "run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let key = dir.join("munge.key");
        let bytes: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&key, bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = dir.join("munge.sock");
        let conf = dir.join("slurm.conf");
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: conf.clone(),
            daemons: Vec::new(),
        };
        let log = |name: &str| std::fs::File::create(dir.join("log").join(name)).unwrap();
        let munged = Command::new("munged")
            .env("PATH", path_env())
            // --force: the temporary folder's parents (/tmp) are world-writable.
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--pid-file={}",
                dir.join("run/munged.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("log/munged.log").display()
            ))
            .arg(format!("--seed-file={}", dir.join("munged.seed").display()))
            .stdout(log("munged.out"))
            .stderr(log("munged.err"))
            .spawn()
            .map_err(|e| format!("munged: {e}"))?;
        cluster.daemons.push(("munged", munged));
        cluster.wait_for("munged's socket", Duration::from_secs(20), |_| {
            socket.exists()
        })?;

        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ctld_port, slurmd_port) = (free_port(), free_port());
        let d = |p: &str| dir.join(p).display().to_string();
        let text = format!(
            "ClusterName=robustvit-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={slurmd_pid}
SlurmctldLogFile={ctld_log}
SlurmdLogFile={slurmd_log}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
",
            socket = socket.display(),
            state = d("state"),
            spool = d("spool"),
            ctld_pid = d("run/slurmctld.pid"),
            slurmd_pid = d("run/slurmd.pid"),
            ctld_log = d("log/slurmctld.log"),
            slurmd_log = d("log/slurmd.log"),
        );
        std::fs::write(&conf, text).unwrap();
        for (name, args) in [
            ("slurmctld", vec!["-D", "-i"]),
            ("slurmd", vec!["-D", "-N", "localhost"]),
        ] {
            let child = Command::new(name)
                .env("PATH", path_env())
                .env("SLURM_CONF", &conf)
                .args(&args)
                .arg("-f")
                .arg(&conf)
                .stdout(log(&format!("{name}.out")))
                .stderr(log(&format!("{name}.err")))
                .spawn()
                .map_err(|e| format!("{name}: {e}"))?;
            cluster.daemons.push((name, child));
        }
        cluster.wait_for("the node to be idle", Duration::from_secs(60), |c| {
            c.run(&["sinfo", "-h", "-o", "%t"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        })?;
        Ok(cluster)
    }

    /// A client command against this cluster only.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(args[0]);
        for (k, _) in std::env::vars() {
            if k.starts_with("SLURM_") {
                c.env_remove(k);
            }
        }
        c.env("PATH", path_env())
            .env("SLURM_CONF", &self.conf)
            .args(&args[1..]);
        c
    }

    fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        self.command(args).stdin(Stdio::null()).output()
    }

    /// Runs a client command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        ready: impl Fn(&Cluster) -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if ready(self) {
                return Ok(());
            }
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                return Err(format!("{name} exited ({status}){}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("timed out waiting for {what}{}", self.logs()))
    }

    /// The ends of the daemons' logs, for a failure message.
    fn logs(&self) -> String {
        let mut t = String::new();
        for f in [
            "slurmctld.log",
            "slurmd.log",
            "munged.log",
            "slurmctld.err",
            "slurmd.err",
        ] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join("log").join(f)) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                t.push_str(&format!("\n--- {f}:\n{tail}"));
            }
        }
        t
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["scancel", "--user=root"]);
        // Let slurmd end the cancelled jobs' processes before it stops itself.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            match self.run(&["squeue", "-h", "-o", "%i"]) {
                Ok(o) if o.status.success() && o.stdout.is_empty() => break,
                Ok(o) if !o.status.success() => break,
                Err(_) => break,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        for (_, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (_, child) in self.daemons.iter_mut().rev() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `epochs_done` and `finished` of a run's state.json, when it has one.
fn run_state(run: &Path) -> Option<(usize, bool)> {
    let text = std::fs::read_to_string(run.join("state.json")).ok()?;
    let st: train::run_dir::RunState = serde_json::from_str(&text).ok()?;
    Some((st.epochs_done, st.finished))
}

/// The value of `KEY=value` in a file of such lines.
fn env_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {}:\n{text}", path.display()))
        .to_string()
}

#[test]
fn slurm_scripts_run_end_to_end_and_survive_a_requeue() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED slurm_scripts_run_end_to_end_and_survive_a_requeue: {why}");
        return;
    }
    let t0 = Instant::now();
    // The jobs call the train and evaluate binaries of this build.
    let bin = Path::new(env!("CARGO_BIN_EXE_experiments"))
        .parent()
        .unwrap()
        .to_path_buf();
    // `cargo test --release --workspace` builds them beside this package's binary (for the
    // train and evaluate tests); building them here would resolve features differently and
    // rebuild half the workspace.
    for b in ["train", "evaluate"] {
        assert!(
            bin.join(b).is_file(),
            "{} missing: run `cargo test --release --workspace`, or `cargo build --release -p train -p evaluate` first",
            bin.join(b).display()
        );
    }

    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let out = d.path().join("out");
    let (weights, arch) = fixture(d.path(), &root);
    let args = paper_args(&root, &out, &weights, &arch, &["--epochs", EPOCHS]);

    // The reference: the whole reproduction in-process, moved aside so that the cluster
    // writes the same paths (they are in the tables).
    let t_ref = Instant::now();
    reproduction::run(&parse_paper(&args)).unwrap();
    let reference = d.path().join("reference");
    std::fs::rename(&out, &reference).unwrap();
    let ref_secs = t_ref.elapsed().as_secs_f64();

    let scripts = d.path().join("slurm");
    let gen = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(&args)
        .arg("--slurm")
        .arg(&scripts)
        .arg("--binaries")
        .arg(&bin)
        .args(["--cpus-per-task", "1", "--mem", "200M"])
        .args(["--train-time", "10", "--eval-time", "10"])
        .args(["--sbatch-extra=--partition=test"])
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    assert!(
        !scripts.join("build.sbatch").exists(),
        "--binaries skips the build job"
    );
    for f in [
        "train.sbatch",
        "eval.sbatch",
        "merge.sbatch",
        "submit.sh",
        "tasks.tsv",
        "binaries.env",
    ] {
        assert!(scripts.join(f).is_file(), "{f} missing");
    }
    let train_script = std::fs::read_to_string(scripts.join("train.sbatch")).unwrap();
    assert!(train_script.contains("#SBATCH --requeue"));
    assert!(train_script.contains("#SBATCH --array=0-1"));
    assert!(
        !train_script.contains("--gres"),
        "no GPUs with --device cpu"
    );
    assert!(!train_script.contains("cargo"), "jobs never call cargo");
    let tsv = std::fs::read_to_string(scripts.join("tasks.tsv")).unwrap();
    assert!(
        tsv.contains(&format!("train.sbatch\t0\t{}\t-\t", MODELS[0])),
        "{tsv}"
    );
    assert_eq!(
        env_value(&scripts.join("binaries.env"), "TRAIN"),
        s(&bin.join("train"))
    );

    let cluster_dir = d.path().join("cluster");
    let cluster = match Cluster::start(&cluster_dir) {
        Ok(c) => c,
        Err(e) => panic!("the private Slurm cluster did not start: {e}"),
    };
    let t_slurm = Instant::now();
    let submitted = cluster.ok(&["bash", &s(&scripts.join("submit.sh"))]);
    println!("{submitted}");
    let train_job = env_value(&scripts.join("jobs.env"), "TRAIN");

    // Requeue training task 0 once its first epoch is saved and while it still runs.
    let run0 = out.join("runs").join(MODELS[0]);
    let requeued_at = loop {
        assert!(
            t_slurm.elapsed() < DEADLINE,
            "no epoch finished{}",
            cluster.logs()
        );
        if let Some((done, finished)) = run_state(&run0) {
            assert!(
                !finished,
                "training finished before it could be requeued: raise EPOCHS"
            );
            if done >= 1 {
                cluster.ok(&["scontrol", "requeue", &format!("{train_job}_0")]);
                break done;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A requeued job is held back about two minutes before it may start again; once it is
    // pending again, release it at once.
    let start = Instant::now();
    loop {
        let job = cluster.ok(&["scontrol", "show", "job", &format!("{train_job}_0")]);
        let again = ["JobState=RUNNING", "JobState=COMPLETED"];
        if job.contains("Restarts=1") && again.iter().any(|st| job.contains(st)) {
            break;
        }
        if job.contains("JobState=PENDING") && job.contains("Reason=BeginTime") {
            cluster.ok(&[
                "scontrol",
                "update",
                &format!("jobid={train_job}_0"),
                "StartTime=now",
            ]);
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the requeued task did not start again:\n{job}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Wait for every job to leave the queue.
    loop {
        let q = cluster.ok(&["squeue", "-h", "-o", "%i %T %r"]);
        if q.trim().is_empty() {
            break;
        }
        assert!(
            t_slurm.elapsed() < DEADLINE,
            "jobs still queued after {DEADLINE:?}:\n{q}{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let slurm_secs = t_slurm.elapsed().as_secs_f64();
    // When each task (re)started, for the timing report.
    let mut starts: Vec<String> = std::fs::read_dir(scripts.join("logs"))
        .unwrap()
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            text.lines()
                .filter(|l| l.starts_with("== "))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    starts.sort();
    println!("task starts:\n{}", starts.join("\n"));
    let log =
        |name: &str| std::fs::read_to_string(scripts.join("logs").join(name)).unwrap_or_default();
    let merge_log = log("merge.out");
    assert!(
        out.join("paper_table.md").is_file(),
        "the merge did not write the tables; merge.out:\n{merge_log}\ntrain_0.out:\n{}\neval_0.out:\n{}",
        log("train_0.out"),
        log("eval_0.out")
    );

    // The requeued task ran twice, the second time continuing after the saved epochs.
    let train0 = log("train_0.out");
    assert!(
        train0.contains("restart 0") && train0.contains("restart 1"),
        "{train0}"
    );
    let resumed = train0
        .lines()
        .find_map(|l| {
            l.strip_suffix(')')?
                .rsplit_once("(resuming after epoch ")?
                .1
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("the requeued task did not resume:\n{train0}"));
    assert!(
        resumed >= requeued_at && resumed < EPOCHS.parse().unwrap(),
        "requeued after epoch {requeued_at}, resumed after {resumed}"
    );
    let job_state = cluster.ok(&["scontrol", "show", "job", &format!("{train_job}_0")]);
    assert!(job_state.contains("Restarts=1"), "{job_state}");
    assert!(job_state.contains("JobState=COMPLETED"), "{job_state}");

    // Bit-identical weights and the same tables as the uninterrupted in-process run.
    assert_same_outputs(&reference, &out);

    // The merge again, as a requeued merge would run: the tables stay as they are.
    let before = std::fs::read(out.join("paper_table.md")).unwrap();
    let merge = Command::new("bash")
        .arg(scripts.join("merge.sbatch"))
        .output()
        .unwrap();
    assert!(
        merge.status.success(),
        "{}",
        String::from_utf8_lossy(&merge.stderr)
    );
    assert_eq!(before, std::fs::read(out.join("paper_table.md")).unwrap());
    drop(cluster);
    println!(
        "in-process reference {ref_secs:.1} s, Slurm run {slurm_secs:.1} s, whole test {:.1} s (requeued after epoch {requeued_at}, resumed after {resumed})",
        t0.elapsed().as_secs_f64()
    );
}

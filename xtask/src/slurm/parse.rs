//! What the cluster's commands and `baddiff cell --cached-only` print, read into records.
use serde::Serialize;

/// One array task as `sacct` accounts it (its `.batch` step carries the peak memory).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskAccounting {
    pub job_id: String,
    pub task: Option<usize>,
    pub cell: Option<String>,
    pub state: String,
    pub elapsed: String,
    pub max_rss: String,
    pub node: String,
    pub exit_code: String,
}

pub const SACCT_FORMAT: &str = "JobID,State,Elapsed,MaxRSS,NodeList,ExitCode";

/// Parses `sacct -n -P -o SACCT_FORMAT`: one record per array task, steps folded in.
pub fn parse_sacct(text: &str) -> Vec<TaskAccounting> {
    let mut tasks: Vec<TaskAccounting> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 6 {
            continue;
        }
        let (id, step) = match f[0].split_once('.') {
            Some((id, step)) => (id, Some(step)),
            None => (f[0], None),
        };
        let task = id.split_once('_').and_then(|(_, t)| t.parse().ok());
        let i = match tasks.iter().position(|t| t.job_id == id) {
            Some(i) => i,
            None => {
                tasks.push(TaskAccounting {
                    job_id: id.into(),
                    task,
                    ..Default::default()
                });
                tasks.len() - 1
            }
        };
        let t = &mut tasks[i];
        if step.is_none() {
            // "CANCELLED by 0" -> "CANCELLED".
            t.state = f[1].split_whitespace().next().unwrap_or("").into();
            t.elapsed = f[2].into();
            t.node = f[4].into();
            t.exit_code = f[5].into();
        }
        if !f[3].is_empty() && (t.max_rss.is_empty() || rss_kib(f[3]) > rss_kib(&t.max_rss)) {
            t.max_rss = f[3].into();
        }
    }
    tasks
}

/// `123456K` / `1.5G` in KiB, for comparing sacct's MaxRSS values.
fn rss_kib(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: f64 = num.parse().unwrap_or(0.0);
    n * match unit {
        "M" => 1024.0,
        "G" => 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0,
        "K" => 1.0,
        _ => 1.0 / 1024.0,
    }
}

/// States after which a task will not run again by itself.
pub fn is_final(state: &str) -> bool {
    !matches!(
        state,
        "" | "PENDING" | "RUNNING" | "REQUEUED" | "RESIZING" | "SUSPENDED" | "COMPLETING"
    )
}

/// `squeue -h -r -o %i|%T` lines: (job id, array task, state) of queued or running tasks.
pub fn parse_squeue(text: &str) -> Vec<(String, Option<usize>, String)> {
    text.lines()
        .filter_map(|l| {
            let (id, state) = l.trim().split_once('|')?;
            let task = id.split_once('_').and_then(|(_, t)| t.parse().ok());
            let job = id.split('_').next().unwrap_or(id).to_string();
            Some((job, task, state.to_string()))
        })
        .collect()
}

/// The cells `baddiff cell --cached-only` names as `not cached: CELL: why`.
pub fn parse_not_cached(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("not cached: "))
        .filter_map(|rest| rest.split(": ").next())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sacct_lines_fold_into_one_record_per_task() {
        let text = "7_0|COMPLETED|00:00:06||vm|0:0\n7_0.batch|COMPLETED|00:00:06|114144K|vm|0:0\n\
                    7_0.extern|COMPLETED|00:00:06|1.2M|vm|0:0\n7_1|CANCELLED by 0|00:00:03||vm|0:15\n\
                    8|FAILED|00:01:00||vm|1:0\n8.batch|FAILED|00:01:00|2G|vm|1:0\n";
        let t = parse_sacct(text);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0],
            TaskAccounting {
                job_id: "7_0".into(),
                task: Some(0),
                cell: None,
                state: "COMPLETED".into(),
                elapsed: "00:00:06".into(),
                max_rss: "114144K".into(),
                node: "vm".into(),
                exit_code: "0:0".into(),
            }
        );
        assert_eq!((t[1].state.as_str(), t[1].task), ("CANCELLED", Some(1)));
        assert_eq!((t[2].task, t[2].max_rss.as_str()), (None, "2G"));
        assert!(is_final("CANCELLED") && is_final("TIMEOUT") && !is_final("REQUEUED"));
    }

    #[test]
    fn squeue_lines_name_job_task_and_state() {
        assert_eq!(
            parse_squeue("12_3|RUNNING\n13|PENDING\n"),
            vec![
                ("12".into(), Some(3), "RUNNING".into()),
                ("13".into(), None, "PENDING".into())
            ]
        );
    }

    #[test]
    fn not_cached_lines_name_their_cells() {
        let out = "not cached: base: stage train [base: scale] is not cached (1a2b)\n\
                   not cached: E1.BOX_14.CORNER.p0.50.finetune.s0: stage sample [x: y] is not cached (9f)\n";
        assert_eq!(
            parse_not_cached(out),
            vec!["base", "E1.BOX_14.CORNER.p0.50.finetune.s0"]
        );
    }
}

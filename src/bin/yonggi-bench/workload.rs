//! The workload: cold pulls, sequential lifecycles, parallel start and
//! teardown, and memory, against one CRI endpoint.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_cri::v1 as cri;

use crate::cri::{Clients, PodSpec, STOP_TIMEOUT, StepError, call};
use crate::report::{Run, Unit, Value};
use crate::stats;

/// The operations of one lifecycle, in order.
pub const OPS: [&str; 8] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "ExecSync",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];
const RUN: usize = 0;
const CREATE: usize = 1;
const START: usize = 2;
const EXEC: usize = 3;
const STOP: usize = 4;
const REMOVE: usize = 5;
const STOP_POD: usize = 6;
const REMOVE_POD: usize = 7;

pub struct Options {
    pub spec: PodSpec,
    pub big_image: String,
    pub pre_pull: Vec<String>,
    pub lifecycles: usize,
    pub parallel: usize,
    pub concurrency: usize,
    pub daemon_pid: u32,
    /// See [`crate::procfs::helpers`].
    pub helper_match: String,
}

/// Runs every phase and appends its rows to `out`. A phase that fails is
/// recorded as such and the next one still runs.
pub async fn run(c: &Clients, o: &Options, out: &mut Run) {
    out.push(
        "mem.idle",
        "daemon RSS, idle (fresh start)",
        Unit::MiB,
        rss_mib(o.daemon_pid),
    );
    // First the big image, entirely cold; then busybox, whose one layer
    // the big image shares, so its row is a pull with the layer present.
    // Pre-pulls (containerd's pause, also busybox-based) come last so they
    // warm nothing that is measured.
    let pull = timed_pull(c, &o.big_image).await;
    out.push(
        "pull.big",
        "cold pull + unpack, ~100 MB in 5 layers (+ busybox base)",
        Unit::Seconds,
        pull.value(|d| d.as_secs_f64()),
    );
    let small = timed_pull(c, &o.spec.image).await;
    out.push(
        "pull.small",
        "pull busybox, its layer already present",
        Unit::Millis,
        small.value(millis),
    );
    for image in &o.pre_pull {
        if let Err(e) = timed_pull(c, image).await {
            out.push(
                "pre_pull",
                &format!("pre-pull {image}"),
                Unit::Millis,
                e.into(),
            );
        }
    }
    let containers = sequential(c, o, out).await;
    parallel(c, o, containers, out).await;
    out.push(
        "mem.after",
        "daemon RSS, idle after the workload",
        Unit::MiB,
        rss_mib(o.daemon_pid),
    );
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32) -> Value {
    match crate::procfs::rss_kib(pid) {
        Ok(kib) => Value::Num(kib as f64 / 1024.0),
        Err(e) => Value::Failed(format!("{e:#}")),
    }
}

impl From<StepError> for Value {
    fn from(e: StepError) -> Value {
        match e {
            StepError::Unimplemented(rpc) => Value::Unimplemented(rpc.into()),
            StepError::Failed(why) => Value::Failed(why),
        }
    }
}

trait IntoValue {
    fn value(self, f: impl FnOnce(Duration) -> f64) -> Value;
}

impl IntoValue for Result<Duration, StepError> {
    fn value(self, f: impl FnOnce(Duration) -> f64) -> Value {
        match self {
            Ok(d) => Value::Num(f(d)),
            Err(e) => e.into(),
        }
    }
}

async fn timed_pull(c: &Clients, image: &str) -> Result<Duration, StepError> {
    let mut images = c.images.clone();
    let started = Instant::now();
    call!(
        images,
        pull_image,
        "PullImage",
        cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    )?;
    Ok(started.elapsed())
}

/// Per operation: its samples, or why there are none.
#[derive(Default)]
struct Samples {
    times: [Vec<Duration>; 8],
    errors: [Option<StepError>; 8],
    whole: Vec<Duration>,
    run_create_start: Vec<Duration>,
}

/// N lifecycles one after another. Returns `Err` with the reason when
/// containers cannot be run at all (then only the pod operations are
/// measured), so the parallel phase knows.
async fn sequential(c: &Clients, o: &Options, out: &mut Run) -> Result<(), StepError> {
    let mut s = Samples::default();
    let mut containers: Result<(), StepError> = Ok(());
    for i in 0..o.lifecycles {
        let mut t: [Option<Duration>; 8] = [None; 8];
        let result = lifecycle(c, &o.spec, &format!("seq-{i}"), containers.is_ok(), &mut t).await;
        for (op, time) in t.iter().enumerate() {
            if let Some(d) = time {
                s.times[op].push(*d);
            }
        }
        if t.iter().all(Option::is_some) {
            s.whole.push(t.iter().flatten().sum());
            s.run_create_start
                .push(t[RUN..=START].iter().flatten().sum());
        }
        match result {
            Ok(()) => {}
            Err((op, e)) => {
                let unimplemented_container_op =
                    matches!(e, StepError::Unimplemented(_)) && (CREATE..=REMOVE).contains(&op);
                s.errors[op].get_or_insert(e.clone());
                if unimplemented_container_op {
                    containers = Err(e);
                } else {
                    for later in op + 1..OPS.len() {
                        s.errors[later].get_or_insert(e.clone());
                    }
                    containers = containers.and(Err(e));
                    break;
                }
            }
        }
    }
    // Container operations after the one that is unimplemented never ran.
    if let Err(e) = &containers {
        for op in CREATE..=REMOVE {
            s.errors[op].get_or_insert(e.clone());
        }
    }
    let why = |op: usize| -> Value {
        match &s.errors[op] {
            Some(e) => e.clone().into(),
            None => Value::Failed("no samples".into()),
        }
    };
    for (op, name) in OPS.iter().enumerate() {
        push_percentiles(out, &format!("seq.{name}"), name, &s.times[op], || why(op));
    }
    let blocking = || -> Value {
        match containers.clone() {
            Err(e) => e.into(),
            Ok(()) => Value::Failed("no complete lifecycle".into()),
        }
    };
    push_percentiles(
        out,
        "seq.run_create_start",
        "RunPodSandbox + CreateContainer + StartContainer",
        &s.run_create_start,
        blocking,
    );
    push_percentiles(
        out,
        "seq.lifecycle",
        &format!("whole lifecycle (8 RPCs, N={})", o.lifecycles),
        &s.whole,
        blocking,
    );
    containers
}

fn push_percentiles(
    out: &mut Run,
    key: &str,
    label: &str,
    samples: &[Duration],
    why: impl Fn() -> Value,
) {
    let summary = stats::summary(samples);
    for (n, p) in ["p50", "p95", "p99"].iter().enumerate() {
        let value = match summary {
            Some(v) => Value::Num(millis(v[n])),
            None => why(),
        };
        out.push(
            &format!("{key}.{p}"),
            &format!("{label} {p}"),
            Unit::Millis,
            value,
        );
    }
}

/// One lifecycle, each RPC timed into `t`. On error, what was created is
/// removed (untimed) and the failing operation's index is returned.
async fn lifecycle(
    c: &Clients,
    spec: &PodSpec,
    name: &str,
    with_container: bool,
    t: &mut [Option<Duration>; 8],
) -> Result<(), (usize, StepError)> {
    let mut rt = c.runtime.clone();
    let config = spec.sandbox(name);
    let started = Instant::now();
    let pod = call!(
        rt,
        run_pod_sandbox,
        "RunPodSandbox",
        cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }
    )
    .map_err(|e| (RUN, e))?
    .pod_sandbox_id;
    t[RUN] = Some(started.elapsed());
    let container = if with_container {
        container_steps(c, spec, &pod, &config, t).await
    } else {
        Ok(())
    };
    let pod_result = remove_pod(c, &pod, t).await;
    container.and(pod_result)
}

/// Create, start, exec, stop and remove the container of `pod`.
async fn container_steps(
    c: &Clients,
    spec: &PodSpec,
    pod: &str,
    config: &cri::PodSandboxConfig,
    t: &mut [Option<Duration>; 8],
) -> Result<(), (usize, StepError)> {
    let mut rt = c.runtime.clone();
    let started = Instant::now();
    let id = call!(
        rt,
        create_container,
        "CreateContainer",
        cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(spec.container()),
            sandbox_config: Some(config.clone()),
        }
    )
    .map_err(|e| (CREATE, e))?
    .container_id;
    t[CREATE] = Some(started.elapsed());
    let result = run_container(c, &id, t).await;
    let started = Instant::now();
    let removed = call!(
        rt,
        remove_container,
        "RemoveContainer",
        cri::RemoveContainerRequest {
            container_id: id.clone()
        }
    )
    .map_err(|e| (REMOVE, e));
    if removed.is_ok() && result.is_ok() {
        t[REMOVE] = Some(started.elapsed());
    }
    result.and(removed.map(drop))
}

async fn run_container(
    c: &Clients,
    id: &str,
    t: &mut [Option<Duration>; 8],
) -> Result<(), (usize, StepError)> {
    let mut rt = c.runtime.clone();
    let started = Instant::now();
    call!(
        rt,
        start_container,
        "StartContainer",
        cri::StartContainerRequest {
            container_id: id.into()
        }
    )
    .map_err(|e| (START, e))?;
    t[START] = Some(started.elapsed());
    let started = Instant::now();
    let exec = call!(
        rt,
        exec_sync,
        "ExecSync",
        cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            timeout: 10,
        }
    )
    .map_err(|e| (EXEC, e))
    .and_then(|r| {
        if r.exit_code == 0 {
            Ok(())
        } else {
            Err((
                EXEC,
                StepError::Failed(format!("ExecSync: `true` exited {}", r.exit_code)),
            ))
        }
    });
    if exec.is_ok() {
        t[EXEC] = Some(started.elapsed());
    }
    let started = Instant::now();
    let stopped = call!(
        rt,
        stop_container,
        "StopContainer",
        cri::StopContainerRequest {
            container_id: id.into(),
            timeout: STOP_TIMEOUT.as_secs() as i64,
        }
    )
    .map_err(|e| (STOP, e));
    if stopped.is_ok() && exec.is_ok() {
        t[STOP] = Some(started.elapsed());
    }
    exec.and(stopped.map(drop))
}

async fn remove_pod(
    c: &Clients,
    pod: &str,
    t: &mut [Option<Duration>; 8],
) -> Result<(), (usize, StepError)> {
    let mut rt = c.runtime.clone();
    let started = Instant::now();
    call!(
        rt,
        stop_pod_sandbox,
        "StopPodSandbox",
        cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.into()
        }
    )
    .map_err(|e| (STOP_POD, e))?;
    t[STOP_POD] = Some(started.elapsed());
    let started = Instant::now();
    call!(
        rt,
        remove_pod_sandbox,
        "RemovePodSandbox",
        cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into()
        }
    )
    .map_err(|e| (REMOVE_POD, e))?;
    t[REMOVE_POD] = Some(started.elapsed());
    Ok(())
}

/// P pods, each with one container, started with at most `concurrency` in
/// flight; memory while they all run; then all stopped and removed.
async fn parallel(c: &Clients, o: &Options, containers: Result<(), StepError>, out: &mut Run) {
    let p = o.parallel;
    let start_key = (
        "par.start",
        format!(
            "{p} pods + containers started (wall, ≤{} in flight)",
            o.concurrency
        ),
    );
    let stop_key = ("par.teardown", format!("{p} pods stopped + removed (wall)"));
    let mem_rows = [
        (
            "mem.loaded",
            format!("daemon RSS, {p} pods running"),
            Unit::MiB,
        ),
        (
            "mem.helpers",
            "helper processes (monitors, pod holders | shims)".to_string(),
            Unit::Count,
        ),
        (
            "mem.helper_rss",
            "helper RSS per pod".to_string(),
            Unit::MiB,
        ),
        (
            "mem.helper_pss",
            "helper PSS per pod".to_string(),
            Unit::MiB,
        ),
    ];
    if let Err(e) = containers {
        let v: Value = e.into();
        out.push(start_key.0, &start_key.1, Unit::Seconds, v.clone());
        for (key, label, unit) in mem_rows {
            out.push(key, &label, unit, v.clone());
        }
        out.push(stop_key.0, &stop_key.1, Unit::Seconds, v);
        return;
    }
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..p)
        .map(|i| start_one(c, &o.spec, i))
        .buffer_unordered(o.concurrency.max(1))
        .collect()
        .await;
    let start_wall = started.elapsed();
    let mut pods = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(pod) => pods.push(pod),
            Err((pod, e)) => {
                pods.extend(pod);
                failure.get_or_insert(e);
            }
        }
    }
    match &failure {
        None => out.push(
            start_key.0,
            &start_key.1,
            Unit::Seconds,
            Value::Num(start_wall.as_secs_f64()),
        ),
        Some(e) => out.push(start_key.0, &start_key.1, Unit::Seconds, e.clone().into()),
    }
    let memory = match failure {
        None => memory(o, p),
        Some(e) => {
            let v: Value = e.into();
            [v.clone(), v.clone(), v.clone(), v]
        }
    };
    for ((key, label, unit), value) in mem_rows.into_iter().zip(memory) {
        out.push(key, &label, unit, value);
    }
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(pods)
        .map(|(pod, container)| teardown_one(c, pod, container))
        .buffer_unordered(o.concurrency.max(1))
        .collect()
        .await;
    let stop_wall = started.elapsed();
    let value = match results.into_iter().find_map(Result::err) {
        None => Value::Num(stop_wall.as_secs_f64()),
        Some(e) => e.into(),
    };
    out.push(stop_key.0, &stop_key.1, Unit::Seconds, value);
}

/// The daemon's RSS and its helpers' count, RSS and PSS per pod.
fn memory(o: &Options, pods: usize) -> [Value; 4] {
    let daemon = rss_mib(o.daemon_pid);
    let helpers = match crate::procfs::helpers(&o.helper_match, o.daemon_pid) {
        Ok(h) => h,
        Err(e) => {
            let v = Value::Failed(format!("{e:#}"));
            return [daemon, v.clone(), v.clone(), v];
        }
    };
    let (mut rss, mut pss) = (0u64, 0u64);
    let mut counted = 0usize;
    for pid in &helpers {
        // A helper that exits between listing and reading is not counted.
        if let Ok((r, p)) = crate::procfs::rss_pss_kib(*pid) {
            rss += r;
            pss += p;
            counted += 1;
        }
    }
    let per_pod = |kib: u64| Value::Num(kib as f64 / 1024.0 / pods.max(1) as f64);
    [
        daemon,
        Value::Num(counted as f64),
        per_pod(rss),
        per_pod(pss),
    ]
}

type Started = (String, Option<String>);

/// RunPodSandbox, CreateContainer, StartContainer for pod `i`. On error the
/// pod (if made) is still returned so it is torn down.
async fn start_one(
    c: &Clients,
    spec: &PodSpec,
    i: usize,
) -> Result<Started, (Option<Started>, StepError)> {
    let mut rt = c.runtime.clone();
    let config = spec.sandbox(&format!("par-{i}"));
    let pod = call!(
        rt,
        run_pod_sandbox,
        "RunPodSandbox",
        cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }
    )
    .map_err(|e| (None, e))?
    .pod_sandbox_id;
    let id = call!(
        rt,
        create_container,
        "CreateContainer",
        cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(spec.container()),
            sandbox_config: Some(config),
        }
    )
    .map_err(|e| (Some((pod.clone(), None)), e))?
    .container_id;
    call!(
        rt,
        start_container,
        "StartContainer",
        cri::StartContainerRequest {
            container_id: id.clone()
        }
    )
    .map_err(|e| (Some((pod.clone(), Some(id.clone()))), e))?;
    Ok((pod, Some(id)))
}

/// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox, as
/// kubelet takes a pod down.
async fn teardown_one(
    c: &Clients,
    pod: String,
    container: Option<String>,
) -> Result<(), StepError> {
    let mut rt = c.runtime.clone();
    if let Some(id) = container {
        call!(
            rt,
            stop_container,
            "StopContainer",
            cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: STOP_TIMEOUT.as_secs() as i64,
            }
        )?;
        call!(
            rt,
            remove_container,
            "RemoveContainer",
            cri::RemoveContainerRequest { container_id: id }
        )?;
    }
    call!(
        rt,
        stop_pod_sandbox,
        "StopPodSandbox",
        cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone()
        }
    )?;
    call!(
        rt,
        remove_pod_sandbox,
        "RemovePodSandbox",
        cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod
        }
    )?;
    Ok(())
}

/// Stops and removes every pod labelled with this run (left by a failure).
/// Returns how many there were.
pub async fn sweep(c: &Clients, run_id: &str) -> Result<usize, StepError> {
    let mut rt = c.runtime.clone();
    let pods = call!(
        rt,
        list_pod_sandbox,
        "ListPodSandbox",
        cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [(crate::cri::RUN_LABEL.to_string(), run_id.to_string())].into(),
                ..Default::default()
            }),
        }
    )?
    .items;
    let n = pods.len();
    for pod in pods {
        teardown_one(c, pod.id, None).await?;
    }
    Ok(n)
}

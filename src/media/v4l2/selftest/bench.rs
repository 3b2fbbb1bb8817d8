//! `roomcast encoder-test --bench`: figures, not checks (tests/bench/run.sh `--only lab-m2m`
//! runs it in the qemu lab for the M2M and the software encoder on the same camera).
//!
//! The loop is the video capture thread's (`media::pipeline::start_video`): the camera's next
//! picture, `submit`, `poll` until nothing is ready. `--warmup` pictures go through first; then
//! over `--frames` pictures it records
//! - capture → encoded latency: the picture's capture timestamp (the driver's, on
//!   CLOCK_MONOTONIC) to the `poll` that hands back its coded frame, p50/p99/max over the
//!   window's pictures: media_stats' capture → RTP window, without the hop to the RTP track;
//! - encoder CPU per frame: this thread's CPU time inside `submit` and `poll`, as media_stats
//!   counts it (for M2M that includes the driver's work done inside VIDIOC_QBUF/DQBUF);
//! - process CPU per frame: getrusage user and system time over the window, which adds the
//!   camera's dequeue (and copy, where the encoder does not import its buffers);
//! - machine CPU per frame: every CPU's busy time (/proc/stat) over the window, which adds the
//!   kernel threads no process is charged for: a driver's worker, vivid's picture generator;
//! - RSS: VmRSS every few pictures, steady = the median over the window's second half, and the
//!   peak (VmHWM) at the end.
//!
//! Nothing allocates per picture: the vectors are sized before the loop and the latencies go
//! into media_stats' fixed window.
use super::{exit_code, m2m_description, object, Args, Source};
use crate::media::timing::{
    self, process_cpu_time, round3, thread_cpu_time, FrameTiming, ProcessCpu, TimingReport,
};
use crate::media::v4l2::m2m::M2mEncoder;
use crate::media::{clock, EncodedFrame, VideoEncoder, VideoFormat};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// VmRSS is read every this many pictures: 4 times a second at 30 fps, as tests/bench samples
/// a publisher's.
const RSS_EVERY: u32 = 8;

pub(super) fn m2m(
    args: &Args,
    source: &mut Source,
    encoder: &mut M2mEncoder,
    device: &Path,
    format: VideoFormat,
    coded: u32,
) -> anyhow::Result<ExitCode> {
    let mut run = measure(encoder, source, args.warmup, args.frames)?;
    // After the window: the pictures still in the encoder come out, so each is accounted for.
    let drained = encoder.drain()?;
    run.collect_rest(encoder)?;
    let ok = run.ok() && drained && encoder.stats.unmatched == 0;
    let mut line = m2m_description(encoder, device, args, format, coded);
    line.extend(run.fields(args.fps));
    line.extend(object(serde_json::json!({
        "encoder": "m2m",
        "drain_last_seen": drained,
        "unmatched": encoder.stats.unmatched,
        "ok": ok,
    })));
    println!("{}", serde_json::Value::Object(line));
    Ok(exit_code(ok))
}

#[cfg(feature = "software-h264")]
pub(super) fn software(
    args: &Args,
    source: &mut Source,
    format: VideoFormat,
) -> anyhow::Result<ExitCode> {
    // As open_video_encoder makes it for `encoder = "software"`: the source's own geometry.
    let mut encoder = crate::media::h264::OpenH264Encoder::new(
        format.width,
        format.height,
        format.fps,
        args.bitrate,
    )?;
    let mut run = measure(&mut encoder, source, args.warmup, args.frames)?;
    run.collect_rest(&mut encoder)?;
    let ok = run.ok();
    let mut line = object(serde_json::json!({
        "encoder": "software",
        "name": encoder.name(),
        "source": args.source,
        "raw": format.pixel.to_string(),
        "coded": "H264",
        "width": format.width,
        "height": format.height,
        "ok": ok,
    }));
    line.extend(run.fields(args.fps));
    println!("{}", serde_json::Value::Object(line));
    Ok(exit_code(ok))
}

#[cfg(not(feature = "software-h264"))]
pub(super) fn software(
    _args: &Args,
    _source: &mut Source,
    _format: VideoFormat,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "--encoder software: this build has no software encoder (the `software-h264` feature)"
    )
}

/// The measured window's edges.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// When the picture that opens (or the last that closes) the window was captured.
    capture: Duration,
    at: Duration,
    process: ProcessCpu,
    machine_busy: Option<Duration>,
}

impl Mark {
    fn now(capture: Duration) -> Self {
        Self {
            capture,
            at: clock::monotonic_now(),
            process: process_cpu_time(),
            machine_busy: machine_busy_time(),
        }
    }
}

/// One measured run.
struct Run {
    warmup: u32,
    frames: u32,
    /// Capture times submitted and coded, in order (every picture, warm-up included).
    inputs: Vec<Duration>,
    outputs: Vec<Duration>,
    bytes: u64,
    keyframes: u64,
    /// Capture → encoded latencies and encoder CPU, media_stats' window.
    timing: FrameTiming,
    /// VmRSS every RSS_EVERY pictures of the window, bytes.
    rss: Vec<u64>,
    start: Option<Mark>,
    end: Option<Mark>,
}

fn measure(
    encoder: &mut dyn VideoEncoder,
    source: &mut Source,
    warmup: u32,
    frames: u32,
) -> anyhow::Result<Run> {
    anyhow::ensure!(
        (2..=timing::WINDOW as u32).contains(&frames),
        "--bench --frames {frames}: 2 to {} pictures are measured (the latency window)",
        timing::WINDOW
    );
    let total = (warmup + frames) as usize;
    let mut run = Run {
        warmup,
        frames,
        inputs: Vec::with_capacity(total),
        outputs: Vec::with_capacity(total),
        bytes: 0,
        keyframes: 0,
        timing: FrameTiming::default(),
        rss: Vec::with_capacity((frames / RSS_EVERY + 1) as usize),
        start: None,
        end: None,
    };
    for i in 0..warmup + frames {
        let frame = source.next()?;
        if i == warmup {
            run.start = Some(Mark::now(frame.capture));
        }
        run.inputs.push(frame.capture);
        let cpu = thread_cpu_time();
        encoder.submit(frame)?;
        while let Some(coded) = encoder.poll()? {
            run.coded(coded);
        }
        if run.start.is_some() {
            run.timing.record_encode(thread_cpu_time() - cpu, 1);
            if (i - warmup) % RSS_EVERY == 0 {
                run.rss.push(resident_bytes()?);
            }
        }
    }
    run.end = Some(Mark::now(run.inputs.last().copied().unwrap_or_default()));
    Ok(run)
}

impl Run {
    fn coded(&mut self, coded: EncodedFrame) {
        let latency = clock::monotonic_now().saturating_sub(coded.capture);
        if self.start.is_some_and(|s| coded.capture >= s.capture) && self.end.is_none() {
            self.timing.record_sent(latency, coded.data.len() as u64);
        }
        self.outputs.push(coded.capture);
        self.bytes += coded.data.len() as u64;
        self.keyframes += u64::from(coded.keyframe);
    }

    /// What the encoder still holds after the window: counted, not timed.
    fn collect_rest(&mut self, encoder: &mut dyn VideoEncoder) -> anyhow::Result<()> {
        while let Some(coded) = encoder.poll()? {
            self.coded(coded);
        }
        Ok(())
    }

    fn equal(&self) -> bool {
        self.inputs == self.outputs
    }

    fn monotonic(&self) -> bool {
        self.outputs.windows(2).all(|w| w[0] < w[1])
    }

    /// Every picture came out once, in order, and the window has its figures.
    fn ok(&self) -> bool {
        self.equal() && self.monotonic() && self.start.is_some() && self.end.is_some()
    }

    fn fields(&mut self, fps: u32) -> serde_json::Map<String, serde_json::Value> {
        let report: TimingReport = self.timing.take_report();
        let (start, end) = (self.start.unwrap(), self.end.unwrap());
        let frames = f64::from(self.frames);
        let per_frame = |d: Duration| round3(d.as_secs_f64() * 1000.0 / frames);
        let cpu = end.process.since(start.process);
        let machine = start
            .machine_busy
            .zip(end.machine_busy)
            .map(|(a, b)| per_frame(b.saturating_sub(a)));
        // The camera's own rate over the window: its capture stamps, not our loop.
        let captured_over = end.capture.saturating_sub(start.capture).as_secs_f64();
        let camera_fps = (captured_over > 0.0).then(|| round3((frames - 1.0) / captured_over));
        let mut second_half = self.rss[self.rss.len() / 2..].to_vec();
        let mib = |bytes: u64| round3(bytes as f64 / (1024.0 * 1024.0));
        object(serde_json::json!({
            "bench": true,
            "fps": fps,
            "camera_fps": camera_fps,
            "frames_warmup": self.warmup,
            "frames_measured": self.frames,
            "frames_in": self.inputs.len(),
            "frames_out": self.outputs.len(),
            "bytes": self.bytes,
            "keyframes": self.keyframes,
            "window_s": round3(end.at.saturating_sub(start.at).as_secs_f64()),
            "capture_to_encoded_ms": report.capture_to_rtp_ms,
            "latency_samples": report.frames_sent,
            "encoder_cpu_ms_per_frame": report.encode_cpu_ms_per_frame,
            "process_cpu_ms_per_frame": per_frame(cpu.total()),
            "process_user_ms_per_frame": per_frame(cpu.user),
            "process_sys_ms_per_frame": per_frame(cpu.system),
            "machine_cpu_ms_per_frame": machine,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "rss_steady_mib": median(&mut second_half).map(mib),
            "rss_peak_mib": peak_rss_bytes().map(mib),
            "timestamps_equal_inputs": self.equal(),
            "timestamps_monotonic": self.monotonic(),
        }))
    }
}

/// The median of `values` (the lower middle one of an even count); sorts them.
fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// VmRSS, from /proc/self/statm's second field (pages): a short read into a stack buffer, so
/// sampling it allocates nothing.
fn resident_bytes() -> anyhow::Result<u64> {
    let mut text = [0u8; 128];
    let n = std::fs::File::open("/proc/self/statm")?.read(&mut text)?;
    let pages = statm_resident_pages(&text[..n])
        .ok_or_else(|| anyhow::anyhow!("/proc/self/statm: no resident field"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Ok(pages * page)
}

fn statm_resident_pages(statm: &[u8]) -> Option<u64> {
    std::str::from_utf8(statm)
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// VmHWM (the peak RSS), bytes.
fn peak_rss_bytes() -> Option<u64> {
    status_kib(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
    .map(|k| k * 1024)
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy time summed over every CPU since boot (/proc/stat's `cpu` line: all but idle and
/// iowait), or `None` where it cannot be read.
fn machine_busy_time() -> Option<Duration> {
    busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?).map(|ticks| {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
    })
}

fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let (idle, iowait) = (*fields.get(3)?, *fields.get(4)?);
    let counted: u64 = fields.iter().take(8).sum();
    Some(counted - idle - iowait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed_for_rss_and_busy_time() {
        assert_eq!(
            statm_resident_pages(b"2731 1024 512 300 0 900 0\n"),
            Some(1024)
        );
        assert_eq!(statm_resident_pages(b"2731"), None);
        let status = "Name:\troomcast\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4096 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(5120));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 5 50 1000 20 3 2 0 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 50 + 3 + 2));
        assert_eq!(busy_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn median_is_the_lower_middle_value() {
        assert_eq!(median(&mut [5, 1, 3]), Some(3));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut []), None);
    }

    /// The whole loop on the host: the paced test pattern (as --bench opens it) into openh264.
    #[cfg(feature = "software-h264")]
    #[test]
    fn a_software_run_times_each_picture_of_its_window_and_not_the_warmup() {
        use crate::media::{synthetic::TestPattern, StopSignal};
        let pattern = TestPattern::new(64, 64, 30).unwrap();
        let mut source = Source::Camera(Box::new(pattern), StopSignal::new());
        let mut encoder = crate::media::h264::OpenH264Encoder::new(64, 64, 30, 200).unwrap();
        let mut run = measure(&mut encoder, &mut source, 2, 4).unwrap();
        run.collect_rest(&mut encoder).unwrap();
        assert!(run.ok());
        let f = run.fields(30);
        assert_eq!(
            (f["frames_in"].as_u64(), f["frames_out"].as_u64()),
            (Some(6), Some(6))
        );
        assert_eq!(f["latency_samples"].as_u64(), Some(4), "{f:?}");
        let latency = &f["capture_to_encoded_ms"];
        assert!(latency["p50"].as_f64().unwrap() > 0.0, "{f:?}");
        assert!(latency["p99"].as_f64() >= latency["p50"].as_f64());
        for key in [
            "encoder_cpu_ms_per_frame",
            "process_cpu_ms_per_frame",
            "rss_steady_mib",
        ] {
            assert!(f[key].as_f64().unwrap() > 0.0, "{key}: {f:?}");
        }
        // The pattern stamps picture n at start + n/30 s exactly.
        assert_eq!(f["camera_fps"].as_f64(), Some(30.0));
    }

    #[test]
    fn the_measured_pictures_must_fit_the_latency_window() {
        use crate::media::{synthetic::TestPattern, StopSignal};
        let pattern = TestPattern::new(64, 64, 30).unwrap();
        let mut source = Source::Camera(Box::new(pattern), StopSignal::new());
        let mut encoder = crate::media::passthrough::Passthrough::new();
        for frames in [1, timing::WINDOW as u32 + 1] {
            let err = measure(&mut encoder, &mut source, 0, frames).err().unwrap();
            assert!(format!("{err:#}").contains("latency window"), "{err:#}");
        }
    }

    #[test]
    fn rss_sampling_reads_this_process() {
        let resident = resident_bytes().unwrap();
        assert!(resident > 0);
        // The peak is the highest RSS so far, so it cannot be below an earlier reading.
        assert!(peak_rss_bytes().unwrap() >= resident);
    }
}

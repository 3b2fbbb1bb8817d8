//! `roomcast encoder-test`: drive one V4L2 M2M encoder alone and print one JSON line saying
//! whether it works. For a board owner, the check that the SoC's H.264 encoder takes the
//! camera's pictures (`--source /dev/video0`) before a room is involved; for the lab, the proof
//! of the M2M code on vicodec (`--format FWHT`).
//!
//! It submits the frames in two halves with a drain (V4L2_ENC_CMD_STOP → LAST) and a restart
//! between them, then checks that every picture came out once, in order, stamped with its own
//! capture time.
//!
//! With `--bench` it measures instead (see [`bench`]): the M2M encoder, or with
//! `--encoder software` openh264, on the same pictures, the way the capture thread drives them.
mod bench;

use super::m2m::{self, EncoderSettings, M2mEncoder, Restart};
use super::sys;
use crate::media::{
    clock, open_video_source, synthetic::TestPattern, EncodedFrame, PixelFormat, StopSignal,
    VideoEncoder, VideoFormat, VideoFrame, VideoSettings, VideoSource,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Which encoder encoder-test drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderArg {
    /// A V4L2 memory-to-memory encoder (`--device`, or the first that fits).
    M2m,
    /// openh264 on the CPU, as `[video] encoder = "software"` (with `--bench` only: it has no
    /// queue to drain and restart).
    Software,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The encoder node; default: the first M2M encoder that turns the source's format into
    /// `--format`.
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// The compressed format to ask for (a fourcc): H264, or FWHT on the kernel's vicodec.
    #[arg(long, default_value = "H264")]
    pub format: String,
    /// Pictures to encode (more than the encoder has buffers, so they cycle).
    #[arg(long, default_value_t = 60)]
    pub frames: u32,
    /// Where pictures come from: "test-pattern" (YU12), or a camera as in [video] device
    /// ("/dev/video0", "name:<card>", "bus:<bus info>").
    #[arg(long, default_value = "test-pattern")]
    pub source: String,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// kbit/s
    #[arg(long, default_value_t = 1000)]
    pub bitrate: u32,
    /// Which encoder to drive.
    #[arg(long, value_enum, default_value = "m2m")]
    pub encoder: EncoderArg,
    /// Measure rather than check: `--warmup` pictures, then `--frames` more at the source's own
    /// rate with no drain between them; the JSON line adds capture → coded latency (p50, p99),
    /// CPU per frame and steady RSS. The test pattern is paced like a camera here.
    #[arg(long)]
    pub bench: bool,
    /// With `--bench`: pictures coded before the measured window starts (opening the encoder,
    /// its first keyframe and the camera's start stay out of the figures).
    #[arg(long, default_value_t = 30)]
    pub warmup: u32,
    /// A camera's capture format as `[video] format` names it (yuyv, nv12, yu12); default: the
    /// one the camera offers first in roomcast's order.
    #[arg(long)]
    pub camera_format: Option<String>,
}

/// Pictures from the test pattern (rendered at once, stamped as if captured now) or a camera.
enum Source {
    Pattern(TestPattern, u64, Duration),
    Camera(Box<dyn VideoSource>, StopSignal),
}

impl Source {
    fn next(&mut self) -> anyhow::Result<VideoFrame> {
        match self {
            Self::Pattern(pattern, index, start) => {
                let mut frame = pattern.render(*index);
                frame.capture += *start;
                *index += 1;
                Ok(frame)
            }
            Self::Camera(camera, stop) => camera
                .next_frame(stop)?
                .ok_or_else(|| anyhow::anyhow!("the camera stopped")),
        }
    }
}

fn coded_fourcc(text: &str) -> anyhow::Result<u32> {
    let bytes: [u8; 4] = text.as_bytes().try_into().map_err(|_| {
        anyhow::anyhow!("--format {text:?}: a fourcc is four characters, like H264 or FWHT")
    })?;
    Ok(sys::fourcc(bytes))
}

/// Submit `n` pictures, collecting what comes out; the inputs' capture times are recorded.
fn feed(
    encoder: &mut M2mEncoder,
    source: &mut Source,
    n: u32,
    inputs: &mut Vec<Duration>,
    outputs: &mut Vec<EncodedFrame>,
) -> anyhow::Result<()> {
    for i in 0..n {
        let frame = source.next()?;
        inputs.push(frame.capture);
        if i == n / 2 {
            // Exercises FORCE_KEY_FRAME (vicodec lacks it: a warning, nothing else).
            encoder.request_keyframe();
        }
        encoder.submit(frame)?;
        while let Some(out) = encoder.poll()? {
            outputs.push(out);
        }
    }
    Ok(())
}

fn collect(encoder: &mut M2mEncoder, outputs: &mut Vec<EncodedFrame>) -> anyhow::Result<()> {
    while let Some(out) = encoder.poll()? {
        outputs.push(out);
    }
    Ok(())
}

fn camera_format(name: &str) -> anyhow::Result<PixelFormat> {
    [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Yu12]
        .into_iter()
        .find(|p| p.config_name() == name)
        .ok_or_else(|| anyhow::anyhow!("--camera-format {name:?}: one of yuyv, nv12, yu12"))
}

/// The source's pictures as the camera (or pattern) gives them. With `--bench` the test pattern
/// is the paced one `[video] device = "test-pattern"` uses, so every source runs at its rate.
fn open_source(args: &Args) -> anyhow::Result<Source> {
    if args.source == "test-pattern" && !args.bench {
        let pattern = TestPattern::new(args.width, args.height, args.fps)?;
        return Ok(Source::Pattern(pattern, 0, clock::monotonic_now()));
    }
    let settings = VideoSettings {
        device: args.source.clone(),
        width: args.width,
        height: args.height,
        fps: args.fps,
        bitrate: args.bitrate,
        format: args
            .camera_format
            .as_deref()
            .map(camera_format)
            .transpose()?,
        ..Default::default()
    };
    Ok(Source::Camera(
        open_video_source(&settings)?,
        StopSignal::new(),
    ))
}

impl Source {
    fn format(&self) -> VideoFormat {
        match self {
            Self::Pattern(p, ..) => p.format(),
            Self::Camera(c, _) => c.format(),
        }
    }

    /// A camera lends its buffers, so the encoder can import their DMABUFs.
    fn share_buffers(&mut self) -> Option<u32> {
        match self {
            Self::Pattern(..) => None,
            Self::Camera(camera, _) => camera.share_buffers(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut source = open_source(&args)?;
    let format = source.format();
    anyhow::ensure!(
        !format.pixel.is_compressed(),
        "the source gives {}, which an encoder does not take: use a camera mode with raw pictures",
        format.pixel
    );
    match args.encoder {
        EncoderArg::M2m => run_m2m(&args, source, format),
        EncoderArg::Software => {
            anyhow::ensure!(
                args.bench,
                "--encoder software: only with --bench (openh264 has no queue to drain and restart)"
            );
            anyhow::ensure!(
                args.format == "H264",
                "--encoder software codes H264, not {}",
                args.format
            );
            bench::software(&args, &mut source, format)
        }
    }
}

/// The M2M node: `--device`, else the first that turns the source's pictures into `coded`.
fn find_device(args: &Args, format: VideoFormat, coded: u32) -> anyhow::Result<PathBuf> {
    if let Some(device) = &args.device {
        return Ok(device.clone());
    }
    let (found, passed) = m2m::find_encoders(format.pixel, coded);
    found
        .into_iter()
        .next()
        .map(|(info, _)| info.path)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no M2M encoder turns {} into {}: {}",
                format.pixel,
                args.format,
                if passed.is_empty() {
                    "no memory-to-memory device is present".to_owned()
                } else {
                    passed.join("; ")
                }
            )
        })
}

fn run_m2m(args: &Args, mut source: Source, format: VideoFormat) -> anyhow::Result<ExitCode> {
    let coded = coded_fourcc(&args.format)?;
    let import = source.share_buffers();
    let device = find_device(args, format, coded)?;
    let settings = EncoderSettings {
        width: format.width,
        height: format.height,
        fps: format.fps,
        bitrate_bps: args.bitrate.saturating_mul(1000),
        raw: format.pixel,
        coded,
    };
    let mut encoder = M2mEncoder::open_with(&device, settings, import)?;
    if args.bench {
        return bench::m2m(args, &mut source, &mut encoder, &device, format, coded);
    }
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    let first_half = args.frames / 2;
    feed(
        &mut encoder,
        &mut source,
        first_half,
        &mut inputs,
        &mut outputs,
    )?;
    let first_drain = encoder.drain()?;
    collect(&mut encoder, &mut outputs)?;
    let out_before_restart = outputs.len();
    let restart = encoder.restart()?;
    feed(
        &mut encoder,
        &mut source,
        args.frames - first_half,
        &mut inputs,
        &mut outputs,
    )?;
    let second_drain = encoder.drain()?;
    collect(&mut encoder, &mut outputs)?;

    let captures: Vec<Duration> = outputs.iter().map(|o| o.capture).collect();
    let equal = captures == inputs;
    let monotonic = captures.windows(2).all(|w| w[0] < w[1]);
    let (out_bufs, _) = encoder.buffers();
    let after_restart = outputs.len() - out_before_restart;
    let stats = encoder.stats;
    let ok = equal
        && monotonic
        && first_drain
        && second_drain
        && inputs.len() == outputs.len()
        && inputs.len() > out_bufs
        && after_restart > 0
        && stats.unmatched == 0;
    let mut summary = m2m_description(&encoder, &device, args, format, coded);
    summary.extend(object(serde_json::json!({
        "frames_in": inputs.len(),
        "frames_out": outputs.len(),
        "frames_after_restart": after_restart,
        "bytes": stats.bytes,
        "keyframes": stats.keyframes,
        "first_keyframe": outputs.first().map(|o| o.keyframe),
        // Enough for a codec header's picture size (FWHT: big-endian width and height at 12..20).
        "first_bytes": outputs.first().map(|o| o.data.iter().take(20).map(|b| format!("{b:02x}")).collect::<String>()),
        "timestamps_equal_inputs": equal,
        "timestamps_monotonic": monotonic,
        "unmatched": stats.unmatched,
        "skipped": stats.skipped,
        "drain_last_seen": [first_drain, second_drain],
        "restart": match restart { Restart::Command => "V4L2_ENC_CMD_START", Restart::Streamoff => "STREAMOFF/STREAMON" },
        "ok": ok,
    })));
    println!("{}", serde_json::Value::Object(summary));
    Ok(exit_code(ok))
}

/// What the M2M encoder is and how it was set up: the first fields of every JSON line.
fn m2m_description(
    encoder: &M2mEncoder,
    device: &std::path::Path,
    args: &Args,
    format: VideoFormat,
    coded: u32,
) -> serde_json::Map<String, serde_json::Value> {
    let (out_bufs, cap_bufs) = encoder.buffers();
    let controls = encoder.controls();
    let dmabuf = match encoder.import_status() {
        Ok(()) => "imported".to_owned(),
        Err(why) => format!("not used: {why}; each picture is copied once into an mmap buffer"),
    };
    object(serde_json::json!({
        "device": device.display().to_string(),
        "name": encoder.name(),
        "api": encoder.api().as_str(),
        "source": args.source,
        "raw": format.pixel.to_string(),
        "coded": sys::fourcc_text(coded),
        "width": format.width,
        "height": format.height,
        "buffer_size": format!("{}x{}", encoder.buffer_size().0 .0, encoder.buffer_size().0 .1),
        "crop": match encoder.buffer_size().1 {
            None => "not needed".to_owned(),
            Some(Ok(())) => "set".to_owned(),
            Some(Err(e)) => format!("refused: {e}"),
        },
        "output_buffers": out_bufs,
        "capture_buffers": cap_bufs,
        "controls_applied": controls.applied,
        "controls_lacking": controls.lacking.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "dmabuf": dmabuf,
    }))
}

/// The fields of a `json!({...})` literal, to extend another line's.
fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => unreachable!("json! of an object literal gave {other}"),
    }
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_fourccs() {
        assert_eq!(coded_fourcc("FWHT").unwrap(), sys::fourcc(*b"FWHT"));
        assert!(format!("{:#}", coded_fourcc("H.264").unwrap_err()).contains("four characters"));
    }
}

//! Capture → encode on a plain thread per track; encoded frames leave through a bounded queue
//! that drops the oldest.
//!
//! The thread blocks in the source (like a real device read), so it never sits on the async
//! runtime. Keyframe requests and bitrate changes arrive as flags the thread checks before each
//! frame, so the encoder is only ever touched by its own thread. Stopping wakes the source at
//! once and the thread is joined, so a stopped pipeline leaves nothing running.
use super::queue::{DropOldest, Pushed};
use super::timing::{thread_cpu_time, FrameTiming};
use super::{AudioEncoder, AudioSource, StopSignal, VideoEncoder, VideoSource};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An encoded frame of either kind, ready to packetize.
#[derive(Debug, Clone)]
pub struct EncodedSample {
    pub data: bytes::Bytes,
    /// Capture time on CLOCK_MONOTONIC: the RTP timestamp is computed from it.
    pub capture: Duration,
    pub keyframe: bool,
}

/// The range congestion control may move the video bitrate in, bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateLimits {
    pub min_bps: u32,
    pub max_bps: u32,
}

impl BitrateLimits {
    pub fn new(min_bps: u32, max_bps: u32) -> Self {
        Self {
            min_bps: min_bps.min(max_bps),
            max_bps,
        }
    }

    pub fn clamp(&self, bps: u32) -> u32 {
        bps.clamp(self.min_bps, self.max_bps)
    }
}

impl Default for BitrateLimits {
    fn default() -> Self {
        Self::new(0, u32::MAX)
    }
}

/// Shared between the capture thread and its owner.
#[derive(Debug, Default)]
pub struct PipelineControl {
    stop: StopSignal,
    keyframe: AtomicBool,
    /// A bitrate (bit/s) waiting to be applied; 0 means none.
    bitrate: AtomicU32,
    /// The bitrate the encoder runs at or is about to (bit/s): its configured one (see
    /// [`PipelineControl::note_start_bitrate`]) until feedback moves it; 0 when unknown.
    pub bitrate_target: AtomicU32,
    limits: BitrateLimits,
    /// Frames that came out of the encoder.
    pub encoded: AtomicU64,
    pub keyframes: AtomicU64,
    /// Frames the full queue dropped (the oldest, and the deltas that depended on them).
    pub dropped: AtomicU64,
    /// IDRs requested because a drop broke the stream.
    pub drop_keyframe_requests: AtomicU64,
    /// Encoder CPU per frame (the capture thread) and capture → RTP latency (the forwarder).
    pub timing: FrameTiming,
}

impl PipelineControl {
    fn new(limits: BitrateLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Ask the encoder for `bps`, clamped to the configured limits; applied before the next
    /// frame. This is the seam congestion feedback (REMB, TWCC, receiver reports) plugs into.
    /// Returns the value that will be applied.
    pub fn set_bitrate(&self, bps: u32) -> u32 {
        let bps = self.limits.clamp(bps).max(1);
        self.bitrate.store(bps, Ordering::Relaxed);
        self.bitrate_target.store(bps, Ordering::Relaxed);
        bps
    }

    /// The bitrate the encoder was opened with, where congestion control starts from.
    pub fn note_start_bitrate(&self, bps: u32) {
        self.bitrate_target.store(bps, Ordering::Relaxed);
    }

    pub fn limits(&self) -> BitrateLimits {
        self.limits
    }

    pub fn stop(&self) {
        self.stop.stop();
    }

    pub fn stopped(&self) -> bool {
        self.stop.is_stopped()
    }
}

/// The queue between the capture thread and the network task.
struct Shared {
    queue: Mutex<DropOldest<EncodedSample>>,
    ready: tokio::sync::Notify,
    /// The capture thread has ended: no more samples after the queued ones.
    closed: AtomicBool,
    /// The network side is gone: the capture thread should stop.
    receiver_gone: AtomicBool,
}

/// The network task's end of the queue.
pub struct SampleReceiver {
    shared: Arc<Shared>,
}

impl SampleReceiver {
    /// A receiver that is already closed: a stand-in where the real one moved on (a capture
    /// pipeline's samples outlive the tracks that send them).
    pub fn closed() -> SampleReceiver {
        let (_sender, receiver) = channel(1);
        receiver
    }

    /// The next sample, or `None` once the capture thread has ended and the queue is empty.
    pub async fn recv(&mut self) -> Option<EncodedSample> {
        loop {
            // Notify keeps a permit when nobody waits, so a push between the check and the
            // await is not lost.
            if let Some(sample) = self.shared.queue.lock().unwrap().pop() {
                return Some(sample);
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return self.shared.queue.lock().unwrap().pop();
            }
            self.shared.ready.notified().await;
        }
    }
}

impl Drop for SampleReceiver {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

/// The capture thread's end of the queue.
struct SampleSender {
    shared: Arc<Shared>,
}

impl SampleSender {
    fn push(&self, sample: EncodedSample, independent: bool) -> Pushed {
        let pushed = self.shared.queue.lock().unwrap().push(sample, independent);
        self.shared.ready.notify_one();
        pushed
    }

    fn receiver_gone(&self) -> bool {
        self.shared.receiver_gone.load(Ordering::Acquire)
    }
}

impl Drop for SampleSender {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }
}

fn channel(capacity: usize) -> (SampleSender, SampleReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(DropOldest::new(capacity)),
        ready: tokio::sync::Notify::new(),
        closed: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
    });
    (
        SampleSender {
            shared: shared.clone(),
        },
        SampleReceiver { shared },
    )
}

/// A running capture thread.
pub struct Pipeline {
    pub control: Arc<PipelineControl>,
    pub samples: SampleReceiver,
    /// The first error the thread hit, if it stopped on one.
    pub error: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Stop the capture thread and wait for it to end. Returns within one encode: the source's
    /// wait is woken by the stop.
    pub fn stop_and_join(&mut self) {
        self.control.stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("a capture thread panicked");
            }
        }
    }

    /// Whether the capture thread has ended (stopped, failed, or its receiver went away).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// How many encoded video frames may wait for the network before the oldest are dropped
/// (about half a second at 30 fps).
const VIDEO_QUEUE: usize = 16;
/// Audio frames are 20 ms: 64 is 1.3 s.
const AUDIO_QUEUE: usize = 64;

fn spawn(
    name: &str,
    control: Arc<PipelineControl>,
    capacity: usize,
    body: impl FnOnce(&PipelineControl, &SampleSender) -> anyhow::Result<()> + Send + 'static,
) -> Pipeline {
    let error = Arc::new(Mutex::new(None));
    let (tx, rx) = channel(capacity);
    let (ctl, err) = (control.clone(), error.clone());
    let kind = name.to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("roomcast-{name}"))
        .spawn(move || {
            if let Err(e) = body(&ctl, &tx) {
                tracing::error!("{kind} pipeline stopped: {e:#}");
                *err.lock().unwrap() = Some(format!("{e:#}"));
            }
            // Dropping `tx` here tells the receiver no more samples come.
        })
        .expect("spawn capture thread");
    Pipeline {
        control,
        samples: rx,
        error,
        thread: Some(thread),
    }
}

pub fn start_video(
    mut source: Box<dyn VideoSource>,
    mut encoder: Box<dyn VideoEncoder>,
    limits: BitrateLimits,
) -> Pipeline {
    let control = Arc::new(PipelineControl::new(limits));
    let stop = control.stop.clone();
    spawn("video", control, VIDEO_QUEUE, move |ctl, tx| {
        tracing::debug!("video encoder: {}", encoder.name());
        encoder.set_stop(&stop)?;
        while let Some(frame) = source.next_frame(&stop)? {
            if ctl.keyframe.swap(false, Ordering::Relaxed) {
                encoder.request_keyframe();
            }
            let bps = ctl.bitrate.swap(0, Ordering::Relaxed);
            if bps != 0 {
                match encoder.set_bitrate(bps) {
                    Ok(()) => tracing::debug!("video bitrate now {bps} bit/s"),
                    Err(e) => tracing::warn!("video bitrate {bps} bit/s: {e:#}"),
                }
            }
            // Thread CPU, not wall time: an M2M encoder's wait for the hardware costs nothing.
            // The span includes the queue pushes, a lock and a wake-up each.
            let cpu = thread_cpu_time();
            encoder.submit(frame)?;
            while let Some(encoded) = encoder.poll()? {
                ctl.encoded.fetch_add(1, Ordering::Relaxed);
                if encoded.keyframe {
                    ctl.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                let keyframe = encoded.keyframe;
                let pushed = tx.push(
                    EncodedSample {
                        data: encoded.data,
                        capture: encoded.capture,
                        keyframe,
                    },
                    keyframe,
                );
                if pushed.dropped > 0 {
                    ctl.dropped
                        .fetch_add(u64::from(pushed.dropped), Ordering::Relaxed);
                    tracing::debug!("video queue full: dropped {} frames", pushed.dropped);
                }
                if pushed.request_keyframe {
                    ctl.drop_keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    encoder.request_keyframe();
                }
            }
            ctl.timing.record_encode(thread_cpu_time() - cpu, 1);
            if tx.receiver_gone() {
                break;
            }
        }
        Ok(())
    })
}

pub fn start_audio(
    mut source: Box<dyn AudioSource>,
    mut encoder: Box<dyn AudioEncoder>,
) -> Pipeline {
    let control = Arc::new(PipelineControl::new(BitrateLimits::default()));
    let stop = control.stop.clone();
    spawn("audio", control, AUDIO_QUEUE, move |ctl, tx| {
        while let Some(frame) = source.next_frame(&stop)? {
            let cpu = thread_cpu_time();
            let data = encoder.encode(&frame)?;
            ctl.timing.record_encode(thread_cpu_time() - cpu, 1);
            ctl.encoded.fetch_add(1, Ordering::Relaxed);
            // Every Opus packet decodes on its own.
            let pushed = tx.push(
                EncodedSample {
                    data,
                    capture: frame.capture,
                    keyframe: false,
                },
                true,
            );
            ctl.dropped
                .fetch_add(u64::from(pushed.dropped), Ordering::Relaxed);
            if tx.receiver_gone() {
                break;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::synthetic::{TestPattern, Tone};
    use crate::media::{EncodedFrame, VideoFrame};
    use std::collections::VecDeque;

    /// Passes frames through as fake encoded ones and records what reached it.
    #[derive(Default)]
    struct Recorder {
        ready: VecDeque<EncodedFrame>,
        submitted: u64,
        keyframe_next: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl VideoEncoder for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn submit(&mut self, frame: VideoFrame) -> anyhow::Result<()> {
            let keyframe = std::mem::take(&mut self.keyframe_next) || self.submitted == 0;
            self.submitted += 1;
            self.ready.push_back(EncodedFrame {
                data: bytes::Bytes::from_static(b"x"),
                keyframe,
                capture: frame.capture,
            });
            Ok(())
        }
        fn poll(&mut self) -> anyhow::Result<Option<EncodedFrame>> {
            Ok(self.ready.pop_front())
        }
        fn request_keyframe(&mut self) {
            self.keyframe_next = true;
            self.log.lock().unwrap().push("keyframe".into());
        }
        fn set_bitrate(&mut self, bps: u32) -> anyhow::Result<()> {
            self.log.lock().unwrap().push(format!("bitrate {bps}"));
            Ok(())
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn video_frames_arrive_in_order_with_capture_times_and_the_thread_joins() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            log: log.clone(),
            ..Default::default()
        };
        let source = TestPattern::new(64, 64, 60).unwrap();
        let mut pipeline = start_video(
            Box::new(source),
            Box::new(recorder),
            BitrateLimits::new(100_000, 500_000),
        );
        // Out of range requests are clamped to the configured limits before they reach the
        // encoder.
        assert_eq!(pipeline.control.set_bitrate(10_000_000), 500_000);
        let log_has = |entry: &str| log.lock().unwrap().iter().any(|l| l == entry);
        let samples = runtime().block_on(async {
            let mut got = Vec::new();
            // The request is applied before the next frame after it; a few frames at most.
            while got.len() < 4 || (!log_has("bitrate 500000") && got.len() < 120) {
                got.push(pipeline.samples.recv().await.unwrap());
            }
            got
        });
        // Frame n is stamped n/60 s after frame 0, to the nanosecond.
        let offsets: Vec<_> = samples[..4]
            .iter()
            .map(|s| s.capture - samples[0].capture)
            .collect();
        let expected: Vec<_> = (0..4u64)
            .map(|n| Duration::from_nanos(n * 1_000_000_000 / 60))
            .collect();
        assert_eq!(offsets, expected);
        assert!(log_has("bitrate 500000"));
        pipeline.stop_and_join();
        assert!(pipeline.is_finished());
        assert!(pipeline.error.lock().unwrap().is_none());
        // Every frame that went through the encoder was timed.
        let timing = pipeline.control.timing.take_report();
        assert_eq!(
            timing.frames_encoded,
            pipeline.control.encoded.load(Ordering::Relaxed)
        );
        assert!(timing.encode_cpu_ms_per_frame.is_some());
    }

    /// A camera that has `n` frames ready at once, then ends: drops become deterministic.
    struct Burst {
        pattern: TestPattern,
        next: u64,
        n: u64,
    }

    impl VideoSource for Burst {
        fn format(&self) -> crate::media::VideoFormat {
            self.pattern.format()
        }
        fn next_frame(&mut self, _stop: &StopSignal) -> anyhow::Result<Option<VideoFrame>> {
            if self.next == self.n {
                return Ok(None);
            }
            self.next += 1;
            Ok(Some(self.pattern.render(self.next - 1)))
        }
    }

    #[test]
    fn a_consumer_that_falls_behind_loses_the_oldest_and_the_encoder_is_asked_for_an_idr() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            log: log.clone(),
            ..Default::default()
        };
        // 40 frames and nobody reading a 16-frame queue.
        let source = Burst {
            pattern: TestPattern::new(64, 64, 30).unwrap(),
            next: 0,
            n: 40,
        };
        let mut pipeline = start_video(
            Box::new(source),
            Box::new(recorder),
            BitrateLimits::default(),
        );
        // The source ends after 40 frames, so the thread ends by itself.
        let thread = pipeline.thread.take().unwrap();
        thread.join().unwrap();
        let control = pipeline.control.clone();
        // K0 D1..D15 fill the queue; D16 pushes out K0, which breaks D1..D16: 17 dropped and
        // an IDR requested. K17 D18..D32 fill it again; D33 breaks that run the same way.
        // K34 D35..D39 remain.
        assert_eq!(control.dropped.load(Ordering::Relaxed), 34);
        assert_eq!(control.drop_keyframe_requests.load(Ordering::Relaxed), 2);
        assert_eq!(
            log.lock()
                .unwrap()
                .iter()
                .filter(|l| *l == "keyframe")
                .count(),
            2
        );
        let rest = runtime().block_on(async {
            let mut rest = Vec::new();
            while let Some(s) = pipeline.samples.recv().await {
                rest.push(s);
            }
            rest
        });
        let first = pattern_index(rest[0].capture);
        assert_eq!(first, 34);
        assert!(rest[0].keyframe, "what is left starts at a keyframe");
        assert_eq!(rest.len(), 6);
        assert!(rest[1..].iter().all(|s| !s.keyframe));
    }

    fn pattern_index(capture: Duration) -> u64 {
        ((capture.as_nanos() * 30 + 500_000_000) / 1_000_000_000) as u64
    }

    #[test]
    fn audio_pipeline_stops_and_joins_and_the_receiver_sees_the_end() {
        let mut pipeline = start_audio(
            Box::new(Tone::new(48000, 1).unwrap()),
            Box::new(crate::media::opus_encoder::OpusEncoder::new(48000, 1, 32).unwrap()),
        );
        let rt = runtime();
        let a = rt.block_on(pipeline.samples.recv()).unwrap();
        let b = rt.block_on(pipeline.samples.recv()).unwrap();
        assert_eq!(b.capture - a.capture, Duration::from_millis(20));
        pipeline.stop_and_join();
        // Drain what was queued; then the end of the stream, not a hang.
        rt.block_on(async { while pipeline.samples.recv().await.is_some() {} });
    }

    #[test]
    fn the_channel_wakes_its_receiver_and_reports_both_ends_going_away() {
        let (tx, mut rx) = channel(2);
        let rt = runtime();
        let sample = |n: u64| EncodedSample {
            data: bytes::Bytes::new(),
            capture: Duration::from_millis(n),
            keyframe: false,
        };
        let producer = std::thread::spawn(move || {
            for n in 0..3 {
                tx.push(sample(n), true);
            }
            // `tx` dropped here: the receiver gets what is queued, then the end.
        });
        producer.join().unwrap();
        let got = rt.block_on(async {
            let mut got = Vec::new();
            while let Some(s) = rx.recv().await {
                got.push(s.capture.as_millis());
            }
            got
        });
        // Capacity 2: the oldest (0) went.
        assert_eq!(got, [1, 2]);

        let (tx, rx) = channel(2);
        assert!(!tx.receiver_gone());
        drop(rx);
        assert!(
            tx.receiver_gone(),
            "the capture thread learns the network side is gone"
        );
    }
}

//! Capture → encode on a plain thread per track; encoded frames leave through a channel.
//!
//! The thread blocks in the source (like a real device read), so it never sits on the async
//! runtime. Keyframe requests arrive as a flag the thread checks before each encode.
use super::{AudioEncoder, AudioSource, EncodedVideo, VideoEncoder, VideoSource};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// An encoded frame of either kind, ready to packetize.
#[derive(Debug, Clone)]
pub struct EncodedSample {
    pub data: bytes::Bytes,
    pub duration: Duration,
    pub keyframe: bool,
}

impl From<EncodedVideo> for EncodedSample {
    fn from(v: EncodedVideo) -> Self {
        Self {
            data: v.data,
            duration: v.duration,
            keyframe: v.keyframe,
        }
    }
}

/// Shared between the capture thread and its owner.
#[derive(Debug, Default)]
pub struct PipelineControl {
    stop: AtomicBool,
    keyframe: AtomicBool,
    /// Frames that came out of the encoder.
    pub encoded: AtomicU64,
    pub keyframes: AtomicU64,
}

impl PipelineControl {
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A running capture thread.
pub struct Pipeline {
    pub control: Arc<PipelineControl>,
    pub samples: mpsc::Receiver<EncodedSample>,
    /// The first error the thread hit, if it stopped on one.
    pub error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.control.stop();
    }
}

/// How many encoded frames may wait for the network before the oldest are dropped.
const QUEUE: usize = 16;

pub fn start_video(
    mut source: Box<dyn VideoSource>,
    mut encoder: Box<dyn VideoEncoder>,
) -> Pipeline {
    let control = Arc::new(PipelineControl::default());
    let error = Arc::new(std::sync::Mutex::new(None));
    let (tx, rx) = mpsc::channel(QUEUE);
    let (ctl, err) = (control.clone(), error.clone());
    std::thread::Builder::new()
        .name("roomcast-video".into())
        .spawn(move || {
            while !ctl.stopped() {
                let result = source.next_frame().and_then(|frame| {
                    if ctl.keyframe.swap(false, Ordering::Relaxed) {
                        encoder.request_keyframe();
                    }
                    encoder.encode(&frame)
                });
                match result {
                    Ok(Some(encoded)) => {
                        ctl.encoded.fetch_add(1, Ordering::Relaxed);
                        if encoded.keyframe {
                            ctl.keyframes.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Err(mpsc::error::TrySendError::Closed(_)) =
                            tx.try_send(encoded.into())
                        {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!("video pipeline stopped: {e:#}");
                        *err.lock().unwrap() = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
        })
        .expect("spawn video thread");
    Pipeline {
        control,
        samples: rx,
        error,
    }
}

pub fn start_audio(
    mut source: Box<dyn AudioSource>,
    mut encoder: Box<dyn AudioEncoder>,
) -> Pipeline {
    let control = Arc::new(PipelineControl::default());
    let error = Arc::new(std::sync::Mutex::new(None));
    let (tx, rx) = mpsc::channel(QUEUE * 4);
    let (ctl, err) = (control.clone(), error.clone());
    std::thread::Builder::new()
        .name("roomcast-audio".into())
        .spawn(move || {
            while !ctl.stopped() {
                let result = source.next_frame().and_then(|frame| {
                    let duration = frame.duration();
                    encoder.encode(&frame).map(|data| EncodedSample {
                        data,
                        duration,
                        keyframe: false,
                    })
                });
                match result {
                    Ok(sample) => {
                        ctl.encoded.fetch_add(1, Ordering::Relaxed);
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(sample) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!("audio pipeline stopped: {e:#}");
                        *err.lock().unwrap() = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
        })
        .expect("spawn audio thread");
    Pipeline {
        control,
        samples: rx,
        error,
    }
}

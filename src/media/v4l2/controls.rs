//! Codec controls (V4L2_CID_MPEG_VIDEO_*), for both devices that encode: an M2M encoder (see
//! [`super::m2m`]) and a camera that delivers H.264 itself (its encoder sits behind the capture
//! node: the Raspberry Pi's legacy bcm2835-v4l2 camera, SoC ISPs with an encoder, UVC cameras
//! whose driver maps their encoding unit). Both get the same plan at start ([`control_plan`]),
//! each control set on its own so one the driver lacks costs a warning, never the device.
//!
//! A camera's controls are probed (VIDIOC_QUERYCTRL) before anything is set: a camera often has
//! none (v4l2loopback, most UVC H.264 cameras), and passthrough works without them, so what is
//! missing is said once at open with what it costs, and a keyframe request or bitrate change
//! that has no control to go to is then a debug line, not a warning per request.
use super::sys;
use crate::media::CameraEncoderControls;
use std::os::fd::{AsFd, OwnedFd};

const H264: u32 = sys::fourcc(*b"H264");

/// What a codec's controls aim at: the stream's size, rate, bitrate and coded format (a fourcc:
/// `H264`, or `FWHT` on vicodec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecTarget {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    pub coded: u32,
}

/// An H.264 level: `idc` as in the SPS (31 for 3.1), `v4l2` the V4L2_MPEG_VIDEO_H264_LEVEL_*
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Level {
    pub idc: u8,
    pub v4l2: i64,
}

/// The smallest level whose limits (H.264 Table A-1: frame size and macroblock rate, and the
/// baseline bit rate) hold this stream. 720p30 fits 3.1; 1080p30 does not (8160 macroblocks a
/// frame against 3.1's 3600) and needs 4.0. A decoder may refuse a stream beyond its level.
pub fn h264_level(width: u32, height: u32, fps: u32, bitrate_bps: u32) -> H264Level {
    // (level_idc, V4L2 enum, MaxFS in macroblocks, MaxMBPS, MaxBR in kbit/s)
    const LEVELS: [(u8, i64, u64, u64, u64); 15] = [
        (10, 0, 99, 1_485, 64),
        (11, 2, 396, 3_000, 192),
        (12, 3, 396, 6_000, 384),
        (13, 4, 396, 11_880, 768),
        (20, 5, 396, 11_880, 2_000),
        (21, 6, 792, 19_800, 4_000),
        (22, 7, 1_620, 20_250, 4_000),
        (30, 8, 1_620, 40_500, 10_000),
        (31, 9, 3_600, 108_000, 14_000),
        (32, 10, 5_120, 216_000, 20_000),
        (40, 11, 8_192, 245_760, 20_000),
        (41, 12, 8_192, 245_760, 50_000),
        (42, 13, 8_704, 522_240, 50_000),
        (50, 14, 22_080, 589_824, 135_000),
        (51, 15, 36_864, 983_040, 240_000),
    ];
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let rate = mbs * u64::from(fps.max(1));
    let kbps = u64::from(bitrate_bps).div_ceil(1000);
    let (idc, v4l2, ..) = LEVELS
        .iter()
        .copied()
        .find(|&(_, _, fs, mbps, br)| mbs <= fs && rate <= mbps && kbps <= br)
        .unwrap_or(LEVELS[LEVELS.len() - 1]);
    H264Level { idc, v4l2 }
}

/// One codec control to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub id: u32,
    pub value: i64,
    pub name: &'static str,
}

/// The controls to set at open. Every codec gets bitrate and GOP; H.264 also gets constrained
/// baseline (what browsers decode everywhere), the level by resolution, an IDR period equal to
/// the GOP, and SPS/PPS repeated before every IDR (a late subscriber starts there).
pub fn control_plan(s: &CodecTarget) -> heapless::Vec<Control, 8> {
    let gop = i64::from(s.fps.max(1) * crate::media::PERIODIC_IDR_SECONDS);
    let mut plan = heapless::Vec::new();
    let mut add = |id, value, name| {
        let _ = plan.push(Control { id, value, name });
    };
    add(
        sys::CID_MPEG_VIDEO_BITRATE_MODE,
        sys::MPEG_VIDEO_BITRATE_MODE_CBR,
        "BITRATE_MODE",
    );
    add(
        sys::CID_MPEG_VIDEO_BITRATE,
        i64::from(s.bitrate_bps),
        "BITRATE",
    );
    add(sys::CID_MPEG_VIDEO_GOP_SIZE, gop, "GOP_SIZE");
    if s.coded == H264 {
        add(
            sys::CID_MPEG_VIDEO_H264_PROFILE,
            sys::MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE,
            "H264_PROFILE",
        );
        add(
            sys::CID_MPEG_VIDEO_H264_LEVEL,
            h264_level(s.width, s.height, s.fps, s.bitrate_bps).v4l2,
            "H264_LEVEL",
        );
        add(sys::CID_MPEG_VIDEO_H264_I_PERIOD, gop, "H264_I_PERIOD");
        add(
            sys::CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
            1,
            "REPEAT_SEQ_HEADER",
        );
    }
    plan
}

/// What the driver took and what it lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlReport {
    pub applied: Vec<&'static str>,
    /// Control name and the driver's error.
    pub lacking: Vec<(&'static str, String)>,
}

impl ControlReport {
    pub fn lacks(&self, name: &str) -> bool {
        self.lacking.iter().any(|(n, _)| *n == name)
    }
}

/// Set each control on its own, so one the driver lacks (vicodec has no BITRATE; bcm2835 has
/// no B-frames) costs a warning, not the encoder.
pub fn apply_controls(
    what: &str,
    plan: &[Control],
    mut set: impl FnMut(&Control) -> std::io::Result<()>,
) -> ControlReport {
    let mut report = ControlReport::default();
    for control in plan {
        match set(control) {
            Ok(()) => report.applied.push(control.name),
            Err(e) => {
                tracing::warn!(
                    "{what}: the driver lacks control {} = {} ({e}); going on without it",
                    control.name,
                    control.value
                );
                report.lacking.push((control.name, e.to_string()));
            }
        }
    }
    report
}

pub fn set_control(fd: &OwnedFd, id: u32, value: i64) -> std::io::Result<()> {
    let mut control = sys::v4l2_ext_control {
        id,
        size: 0,
        reserved2: 0,
        value64: value,
    };
    // 32-bit controls read `value`, the low half of `value64` on little-endian targets.
    #[cfg(target_endian = "big")]
    compile_error!("v4l2_ext_control.value64 stands in for `value` on little-endian targets only");
    let mut controls = sys::v4l2_ext_controls {
        which: sys::CTRL_CLASS_CODEC,
        count: 1,
        error_idx: 0,
        request_fd: 0,
        reserved: 0,
        controls: &mut control,
    };
    sys::ioctl(fd.as_fd(), sys::VIDIOC_S_EXT_CTRLS, &mut controls)
}

/// A control's range, from VIDIOC_QUERYCTRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRange {
    pub min: i64,
    pub max: i64,
}

/// Whether the device at `fd` has control `id`, usable and settable, and its range.
pub fn query_control(fd: &OwnedFd, id: u32) -> Option<ControlRange> {
    let mut query: sys::v4l2_queryctrl = sys::zeroed();
    query.id = id;
    sys::ioctl(fd.as_fd(), sys::VIDIOC_QUERYCTRL, &mut query).ok()?;
    let unusable = sys::CTRL_FLAG_DISABLED | sys::CTRL_FLAG_READ_ONLY;
    (query.id == id && query.flags & unusable == 0).then_some(ControlRange {
        min: i64::from(query.minimum),
        max: i64::from(query.maximum),
    })
}

/// What a camera's own encoder lets roomcast do while it streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CameraCodecControls {
    /// V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME (a button) is there.
    pub force_keyframe: bool,
    /// V4L2_CID_MPEG_VIDEO_BITRATE's range, when it is there.
    pub bitrate: Option<ControlRange>,
}

impl CameraCodecControls {
    pub fn probe(mut query: impl FnMut(u32) -> Option<ControlRange>) -> Self {
        Self {
            force_keyframe: query(sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME).is_some(),
            bitrate: query(sys::CID_MPEG_VIDEO_BITRATE),
        }
    }

    /// What each missing control costs, one line per control: logged once, at open.
    pub fn missing(&self) -> heapless::Vec<&'static str, 2> {
        let mut out = heapless::Vec::new();
        if !self.force_keyframe {
            let _ = out.push(
                "FORCE_KEY_FRAME: keyframe requests (a viewer's PLI/FIR, a dropped frame) wait \
                 for the camera's next periodic IDR",
            );
        }
        if self.bitrate.is_none() {
            let _ = out.push(
                "BITRATE: the bitrate stays the camera's own; congestion feedback cannot lower it",
            );
        }
        out
    }

    /// `bps` within what the camera takes.
    pub fn bitrate_value(&self, bps: u32) -> Option<i64> {
        self.bitrate
            .map(|range| i64::from(bps).clamp(range.min, range.max.max(range.min)))
    }
}

/// Sets one control on the device: `set_control` on the camera's node, a recorder in tests.
pub type SetControl = Box<dyn FnMut(u32, i64) -> std::io::Result<()> + Send>;

/// The encoder inside a camera that delivers H.264, driven through its capture node's
/// controls. It owns a duplicate of the camera's fd (the same open file, so the same device
/// state), which the capture thread that calls it can use while the camera streams.
pub struct CameraEncoder {
    /// `camera /dev/video0`, for logs.
    what: String,
    controls: CameraCodecControls,
    set: SetControl,
    /// The last bitrate set, so an unchanged target costs no ioctl.
    bitrate: Option<i64>,
}

impl CameraEncoder {
    /// Probe the camera's controls, set the start plan's controls it has (profile, level,
    /// IDR period, SPS/PPS with every IDR, the bitrate; before STREAMON, where a driver still
    /// takes a profile or level), and say once what each missing runtime control costs.
    pub fn open(fd: OwnedFd, what: String, target: &CodecTarget) -> Self {
        let plan = control_plan(target);
        // Each control is asked about once: the runtime ones (BITRATE) are in the plan too.
        let ranges: heapless::Vec<(u32, Option<ControlRange>), 8> = plan
            .iter()
            .map(|c| (c.id, query_control(&fd, c.id)))
            .collect();
        let query = |id| match ranges.iter().find(|(known, _)| *known == id) {
            Some(&(_, range)) => range,
            None => query_control(&fd, id),
        };
        let (present, absent): (Vec<Control>, Vec<Control>) =
            plan.iter().copied().partition(|c| query(c.id).is_some());
        let controls = CameraCodecControls::probe(query);
        let set: SetControl = Box::new(move |id, value| set_control(&fd, id, value));
        Self::start(what, controls, set, &present, &absent)
    }

    /// [`Self::open`] once the device is probed: `present` and `absent` split the start plan.
    pub fn start(
        what: String,
        controls: CameraCodecControls,
        mut set: SetControl,
        present: &[Control],
        absent: &[Control],
    ) -> Self {
        let report = apply_controls(&what, present, |c| set(c.id, c.value));
        if !absent.is_empty() {
            // Passthrough puts SPS/PPS before IDRs itself, and browsers decode the profiles
            // cameras give: worth knowing, not a warning.
            let names: Vec<&str> = absent.iter().map(|c| c.name).collect();
            tracing::info!(
                "{what}: its encoder has no {} control; the stream keeps the camera's own",
                names.join(", ")
            );
        }
        if !report.applied.is_empty() {
            tracing::info!("{what}: set {}", report.applied.join(", "));
        }
        for cost in controls.missing() {
            tracing::warn!("{what}: its encoder lacks {cost}");
        }
        let bitrate = present
            .iter()
            .find(|c| c.id == sys::CID_MPEG_VIDEO_BITRATE && !report.lacks(c.name))
            .map(|c| c.value);
        Self {
            what,
            controls,
            set,
            bitrate,
        }
    }
}

impl CameraEncoderControls for CameraEncoder {
    fn force_keyframe(&mut self) {
        if !self.controls.force_keyframe {
            // Said once at open; the request itself is still worth a trace.
            tracing::debug!(
                "{}: keyframe request: no FORCE_KEY_FRAME, the camera's next periodic IDR serves it",
                self.what
            );
            return;
        }
        match (self.set)(sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1) {
            Ok(()) => tracing::debug!("{}: keyframe forced (FORCE_KEY_FRAME)", self.what),
            Err(e) => {
                // Once: the control is treated as missing from now on.
                tracing::warn!(
                    "{}: FORCE_KEY_FRAME failed ({e}); from now on keyframe requests wait for \
                     the camera's next periodic IDR",
                    self.what
                );
                self.controls.force_keyframe = false;
            }
        }
    }

    fn set_bitrate(&mut self, bps: u32) {
        let Some(value) = self.controls.bitrate_value(bps) else {
            return;
        };
        if self.bitrate == Some(value) {
            return;
        }
        match (self.set)(sys::CID_MPEG_VIDEO_BITRATE, value) {
            Ok(()) => self.bitrate = Some(value),
            Err(e) => {
                tracing::warn!(
                    "{}: BITRATE {value} failed ({e}); from now on the bitrate stays the camera's own",
                    self.what
                );
                self.controls.bitrate = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_follows_resolution_rate_and_bitrate() {
        // 720p30 fits 3.1; 1080p30 is 8160 macroblocks a frame, beyond 3.1's 3600: 4.0.
        assert_eq!(h264_level(1280, 720, 30, 2_000_000).idc, 31);
        assert_eq!(
            h264_level(1920, 1080, 30, 4_000_000),
            H264Level { idc: 40, v4l2: 11 }
        );
        assert_eq!(
            h264_level(640, 480, 30, 1_000_000),
            H264Level { idc: 30, v4l2: 8 }
        );
        // 720p60 exceeds 3.1's macroblock rate.
        assert_eq!(h264_level(1280, 720, 60, 2_000_000).idc, 32);
        // The bit rate counts too: 640x480 at 12 Mbit/s is beyond 3.0's 10.
        assert_eq!(h264_level(640, 480, 30, 12_000_000).idc, 31);
        // Beyond every level: the highest, not a panic.
        assert_eq!(h264_level(8192, 8192, 60, 1_000_000).idc, 51);
    }

    #[test]
    fn h264_gets_its_controls_and_other_codecs_only_the_generic_ones() {
        let mut s = CodecTarget {
            width: 1920,
            height: 1080,
            fps: 30,
            bitrate_bps: 4_000_000,
            coded: H264,
        };
        let plan = control_plan(&s);
        let value = |name| plan.iter().find(|c| c.name == name).map(|c| c.value);
        assert_eq!(
            value("H264_PROFILE"),
            Some(sys::MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE)
        );
        assert_eq!(value("H264_LEVEL"), Some(11), "1080p needs 4.0");
        assert_eq!(value("BITRATE"), Some(4_000_000));
        assert_eq!(value("GOP_SIZE"), Some(120));
        assert_eq!(value("H264_I_PERIOD"), Some(120));
        assert_eq!(value("REPEAT_SEQ_HEADER"), Some(1));
        s.coded = sys::fourcc(*b"FWHT");
        let names: Vec<_> = control_plan(&s).iter().map(|c| c.name).collect();
        assert_eq!(names, ["BITRATE_MODE", "BITRATE", "GOP_SIZE"]);
    }

    #[test]
    fn a_control_the_driver_lacks_is_reported_not_fatal() {
        let s = CodecTarget {
            width: 640,
            height: 480,
            fps: 30,
            bitrate_bps: 1_000_000,
            coded: H264,
        };
        // A driver with no REPEAT_SEQ_HEADER and no bitrate (as vicodec lacks BITRATE).
        let report = apply_controls("/dev/video11", &control_plan(&s), |c| {
            if c.id == sys::CID_MPEG_VIDEO_REPEAT_SEQ_HEADER || c.id == sys::CID_MPEG_VIDEO_BITRATE
            {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        });
        assert!(report.lacks("REPEAT_SEQ_HEADER") && report.lacks("BITRATE"));
        assert!(!report.lacks("H264_LEVEL"));
        assert_eq!(
            report.applied.len() + report.lacking.len(),
            control_plan(&s).len()
        );
    }

    /// The controls set so far, as (id, value), in order.
    type Calls = std::sync::Arc<std::sync::Mutex<Vec<(u32, i64)>>>;

    /// A setter that records every call and fails for the ids in `fails`.
    fn recorder(fails: &'static [u32]) -> (SetControl, Calls) {
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = calls.clone();
        let set: SetControl = Box::new(move |id, value| {
            log.lock().unwrap().push((id, value));
            if fails.contains(&id) {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        });
        (set, calls)
    }

    const RANGE: ControlRange = ControlRange {
        min: 25_000,
        max: 25_000_000,
    };

    #[test]
    fn a_camera_without_codec_controls_names_each_missing_one_with_its_cost() {
        // v4l2loopback, most UVC H.264 cameras: no codec control at all.
        let none = CameraCodecControls::probe(|_| None);
        let missing = none.missing();
        assert_eq!(missing.len(), 2);
        assert!(
            missing[0].starts_with("FORCE_KEY_FRAME") && missing[0].contains("periodic IDR"),
            "{missing:?}"
        );
        assert!(
            missing[1].starts_with("BITRATE") && missing[1].contains("camera's own"),
            "{missing:?}"
        );
        // bcm2835-v4l2 has both.
        let pi = CameraCodecControls::probe(|id| {
            [
                sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME,
                sys::CID_MPEG_VIDEO_BITRATE,
            ]
            .contains(&id)
            .then_some(RANGE)
        });
        assert!(pi.force_keyframe && pi.bitrate == Some(RANGE));
        assert!(pi.missing().is_empty());
    }

    #[test]
    fn requests_without_a_control_touch_nothing_and_a_failing_one_is_tried_once() {
        let (set, calls) = recorder(&[]);
        let mut none = CameraEncoder::start(
            "camera /dev/video0".into(),
            CameraCodecControls::default(),
            set,
            &[],
            &[],
        );
        for _ in 0..3 {
            none.force_keyframe();
            none.set_bitrate(500_000);
        }
        assert!(calls.lock().unwrap().is_empty(), "no control, no ioctl");

        let (set, calls) = recorder(&[sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME]);
        let controls = CameraCodecControls {
            force_keyframe: true,
            bitrate: None,
        };
        let mut broken = CameraEncoder::start("camera /dev/video0".into(), controls, set, &[], &[]);
        broken.force_keyframe();
        broken.force_keyframe();
        assert_eq!(
            *calls.lock().unwrap(),
            [(sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)],
            "after the first failure it counts as missing"
        );
    }

    #[test]
    fn a_camera_with_controls_gets_the_plan_it_has_keyframes_and_bitrates_in_its_range() {
        let target = CodecTarget {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_bps: 2_000_000,
            coded: H264,
        };
        // bcm2835-v4l2: no GOP_SIZE (its IDR period is H264_I_PERIOD).
        let (present, absent): (Vec<Control>, Vec<Control>) = control_plan(&target)
            .iter()
            .copied()
            .partition(|c| c.id != sys::CID_MPEG_VIDEO_GOP_SIZE);
        let (set, calls) = recorder(&[]);
        let controls = CameraCodecControls {
            force_keyframe: true,
            bitrate: Some(RANGE),
        };
        let mut pi = CameraEncoder::start(
            "camera /dev/video0".into(),
            controls,
            set,
            &present,
            &absent,
        );
        let started: Vec<u32> = calls.lock().unwrap().drain(..).map(|(id, _)| id).collect();
        assert_eq!(started, present.iter().map(|c| c.id).collect::<Vec<_>>());
        assert!(!started.contains(&sys::CID_MPEG_VIDEO_GOP_SIZE));
        pi.force_keyframe();
        pi.set_bitrate(2_000_000); // what the plan set already: no ioctl
        pi.set_bitrate(10_000); // below the camera's minimum: its minimum
        pi.set_bitrate(900_000);
        assert_eq!(
            *calls.lock().unwrap(),
            [
                (sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1),
                (sys::CID_MPEG_VIDEO_BITRATE, 25_000),
                (sys::CID_MPEG_VIDEO_BITRATE, 900_000),
            ]
        );
    }
}

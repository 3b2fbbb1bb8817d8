//! What a capture device hands over: pictures with their pixel format, planes, strides, capture
//! time and (from a V4L2 camera) the DMABUF behind them; and what an encoder gives back.
use bytes::Bytes;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// The pixel formats the device takes from a camera (V4L2 fourccs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V: what most UVC cameras and vivid give uncompressed.
    Yuyv,
    /// Y plane, then one interleaved UV plane at half resolution (4:2:0).
    Nv12,
    /// Planar 4:2:0: Y, then U, then V (I420; V4L2's YU12).
    Yu12,
    /// Motion JPEG: one JPEG per frame, one plane.
    Mjpeg,
    /// H.264 Annex-B access units from a camera that encodes: one plane.
    H264,
}

impl PixelFormat {
    /// The V4L2 fourcc (`V4L2_PIX_FMT_*`).
    pub const fn fourcc(self) -> [u8; 4] {
        match self {
            Self::Yuyv => *b"YUYV",
            Self::Nv12 => *b"NV12",
            Self::Yu12 => *b"YU12",
            Self::Mjpeg => *b"MJPG",
            Self::H264 => *b"H264",
        }
    }

    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        [Self::Yuyv, Self::Nv12, Self::Yu12, Self::Mjpeg, Self::H264]
            .into_iter()
            .find(|f| f.fourcc() == fourcc)
    }

    /// How `[video] format` spells it.
    pub const fn config_name(self) -> &'static str {
        match self {
            Self::Yuyv => "yuyv",
            Self::Nv12 => "nv12",
            Self::Yu12 => "yu12",
            Self::Mjpeg => "mjpeg",
            Self::H264 => "h264",
        }
    }

    /// Compressed formats carry one plane of bytes, with no stride.
    pub const fn is_compressed(self) -> bool {
        matches!(self, Self::Mjpeg | Self::H264)
    }

    pub const fn planes(self) -> usize {
        match self {
            Self::Yu12 => 3,
            Self::Nv12 => 2,
            Self::Yuyv | Self::Mjpeg | Self::H264 => 1,
        }
    }

    /// Rows and the smallest stride of plane `plane` for a `width`×`height` picture, or `None`
    /// for a compressed format (its plane is just bytes).
    pub const fn plane_geometry(self, plane: usize, width: u32, height: u32) -> Option<(u32, u32)> {
        let (w, h) = (width, height);
        match (self, plane) {
            (Self::Yuyv, 0) => Some((h, w * 2)),
            (Self::Nv12 | Self::Yu12, 0) => Some((h, w)),
            (Self::Nv12, 1) => Some((h.div_ceil(2), w.div_ceil(2) * 2)),
            (Self::Yu12, 1 | 2) => Some((h.div_ceil(2), w.div_ceil(2))),
            _ => None,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// One plane of a picture: `stride` bytes per row (the driver may pad rows: bcm2835 aligns YU12
/// rows to 64 bytes), or the whole payload for a compressed format (`stride` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plane {
    pub data: Bytes,
    pub stride: usize,
}

/// One picture from a camera.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub planes: heapless::Vec<Plane, 3>,
    /// When the sensor captured it, on CLOCK_MONOTONIC (see [`super::clock`]). RTP time is
    /// derived from this, never from a frame count.
    pub capture: Duration,
    /// The dma-buf the planes live in, when the camera exported one (VIDIOC_EXPBUF): an M2M
    /// encoder can import it instead of copying the planes.
    pub dmabuf: Option<Arc<OwnedFd>>,
}

impl VideoFrame {
    /// A tightly packed I420 (YU12) picture in one buffer: Y, then U, then V. The planes share
    /// the allocation.
    pub fn i420(width: u32, height: u32, data: Bytes, capture: Duration) -> anyhow::Result<Self> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        anyhow::ensure!(
            data.len() >= w * h + 2 * cw * ch,
            "I420 {width}x{height} needs {} bytes, got {}",
            w * h + 2 * cw * ch,
            data.len()
        );
        let mut planes = heapless::Vec::new();
        for (at, len, stride) in [
            (0, w * h, w),
            (w * h, cw * ch, cw),
            (w * h + cw * ch, cw * ch, cw),
        ] {
            let _ = planes.push(Plane {
                data: data.slice(at..at + len),
                stride,
            });
        }
        Ok(Self {
            width,
            height,
            format: PixelFormat::Yu12,
            planes,
            capture,
            dmabuf: None,
        })
    }

    /// A compressed frame (MJPEG, or an H.264 access unit) as one plane.
    pub fn compressed(
        format: PixelFormat,
        width: u32,
        height: u32,
        data: Bytes,
        capture: Duration,
    ) -> Self {
        debug_assert!(format.is_compressed());
        let mut planes = heapless::Vec::new();
        let _ = planes.push(Plane { data, stride: 0 });
        Self {
            width,
            height,
            format,
            planes,
            capture,
            dmabuf: None,
        }
    }

    /// Check that the planes are as many and as large as the format and size need, so an
    /// encoder can index them without bounds surprises from a misbehaving driver.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.planes.len() == self.format.planes(),
            "{} frame has {} planes, the format has {}",
            self.format,
            self.planes.len(),
            self.format.planes()
        );
        for (i, plane) in self.planes.iter().enumerate() {
            let Some((rows, min_stride)) = self.format.plane_geometry(i, self.width, self.height)
            else {
                anyhow::ensure!(!plane.data.is_empty(), "empty {} frame", self.format);
                continue;
            };
            anyhow::ensure!(
                plane.stride >= min_stride as usize,
                "{} plane {i}: stride {} is below the row width {min_stride}",
                self.format,
                plane.stride
            );
            // The last row need not be padded to the stride.
            let need = plane.stride * (rows as usize - 1) + min_stride as usize;
            anyhow::ensure!(
                plane.data.len() >= need,
                "{} plane {i}: {} bytes, {}x{} needs {need}",
                self.format,
                plane.data.len(),
                self.width,
                self.height
            );
        }
        Ok(())
    }
}

/// One encoded video access unit (H.264 Annex-B, SPS/PPS in front of every IDR).
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Bytes,
    pub keyframe: bool,
    /// The capture time of the picture it codes (CLOCK_MONOTONIC).
    pub capture: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs_round_trip() {
        for f in [
            PixelFormat::Yuyv,
            PixelFormat::Nv12,
            PixelFormat::Yu12,
            PixelFormat::Mjpeg,
            PixelFormat::H264,
        ] {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_fourcc(*b"RGB3"), None);
        assert_eq!(PixelFormat::Yu12.to_string(), "YU12");
    }

    #[test]
    fn i420_planes_share_one_buffer_and_validate() {
        let frame =
            VideoFrame::i420(6, 4, Bytes::from(vec![7u8; 36]), Duration::from_secs(3)).unwrap();
        assert_eq!(frame.planes.len(), 3);
        assert_eq!(
            frame
                .planes
                .iter()
                .map(|p| (p.data.len(), p.stride))
                .collect::<Vec<_>>(),
            [(24, 6), (6, 3), (6, 3)]
        );
        frame.validate().unwrap();
        assert!(VideoFrame::i420(6, 4, Bytes::from(vec![0u8; 35]), Duration::ZERO).is_err());
    }

    #[test]
    fn validate_accepts_padded_strides_and_rejects_short_planes() {
        let plane = |len, stride| Plane {
            data: Bytes::from(vec![0u8; len]),
            stride,
        };
        let mut frame = VideoFrame {
            width: 4,
            height: 2,
            format: PixelFormat::Nv12,
            planes: heapless::Vec::new(),
            capture: Duration::ZERO,
            dmabuf: None,
        };
        // Rows padded to 32 bytes, the last row unpadded.
        let _ = frame.planes.push(plane(32 + 4, 32));
        let _ = frame.planes.push(plane(4, 32));
        frame.validate().unwrap();
        frame.planes[1] = plane(3, 32);
        assert!(frame.validate().is_err());
        frame.planes[1] = plane(4, 2);
        assert!(frame.validate().is_err(), "stride below the row width");
        frame.planes.pop();
        assert!(frame.validate().is_err(), "NV12 needs two planes");

        let yuyv = VideoFrame {
            format: PixelFormat::Yuyv,
            planes: heapless::Vec::from_slice(&[plane(16, 8)]).unwrap(),
            ..frame.clone()
        };
        yuyv.validate().unwrap();
    }
}

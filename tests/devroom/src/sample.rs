//! `devroom h264-sample` and `devroom mjpeg-sample`: a still picture a test can recognise after a
//! round trip, as a camera that compresses it would deliver it, for feeding v4l2loopback in the
//! qemu lab (`tests/lab/passthrough-test.sh`). The picture is four vertical bands in colours
//! neither vivid's bars nor roomcast's test pattern have.
//!
//! H.264: an Annex-B elementary stream from roomcast's own software encoder (constrained
//! baseline, SPS/PPS with every IDR) with an IDR every `--gop` frames, so a decoder that joins
//! late starts within one GOP and a writer can loop the file at an IDR.
//!
//! MJPEG: baseline JPEGs (4:2:2, as UVC cameras send, with their Huffman tables), one per frame,
//! simply concatenated: each starts with SOI (FF D8) right after the previous one's EOI (FF D9),
//! which is where a reader splits the file (entropy-coded data never holds FF D8: a coded FF is
//! followed by 00).
use roomcast::media::h264::OpenH264Encoder;
use roomcast::media::synthetic::paint_i420;
use roomcast::media::{VideoEncoder, VideoFrame};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The sample's bands, left to right: name and RGB.
pub const BANDS: [(&str, [u8; 3]); 4] = [
    ("orange", [230, 120, 20]),
    ("purple", [110, 40, 190]),
    ("teal", [20, 140, 140]),
    ("pink", [240, 150, 200]),
];

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    #[arg(long, default_value_t = 320)]
    pub width: u32,
    #[arg(long, default_value_t = 240)]
    pub height: u32,
    #[arg(long, default_value_t = 90)]
    pub frames: u32,
    #[arg(long, default_value_t = 15)]
    pub fps: u32,
    /// An IDR every this many frames (the first frame is one).
    #[arg(long, default_value_t = 30)]
    pub gop: u32,
    /// kbit/s.
    #[arg(long, default_value_t = 400)]
    pub bitrate: u32,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct MjpegArgs {
    #[arg(long, default_value_t = 320)]
    pub width: u16,
    #[arg(long, default_value_t = 240)]
    pub height: u16,
    #[arg(long, default_value_t = 30)]
    pub frames: u32,
    /// JPEG quality, 1..=100.
    #[arg(long, default_value_t = 85)]
    pub quality: u8,
    #[arg(long)]
    pub out: PathBuf,
}

/// What was written, printed as one JSON line.
#[derive(serde::Serialize, Debug)]
pub struct SampleSummary {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// The frames a decoder can start at (every one in MJPEG).
    pub keyframes: Vec<u32>,
    pub bytes: usize,
    /// `name=R,G,B` per band, left to right (what tests/lab/png-bars.py takes).
    pub bands: Vec<String>,
}

/// The band colour at column `x` of a picture `width` wide.
fn band_at(x: u32, width: u32) -> [u8; 3] {
    BANDS[(x * BANDS.len() as u32 / width).min(BANDS.len() as u32 - 1) as usize].1
}

/// Encode the sample: one access unit per frame, in order, each starting with a start code, and
/// the indices of the IDRs.
pub fn encode(args: &SampleArgs) -> anyhow::Result<(Vec<bytes::Bytes>, Vec<u32>)> {
    anyhow::ensure!(
        args.frames > 0 && args.gop > 0 && args.fps > 0,
        "--frames, --gop and --fps must be > 0"
    );
    let picture: bytes::Bytes =
        paint_i420(args.width, args.height, |x, _| band_at(x, args.width)).into();
    let mut encoder = OpenH264Encoder::new(args.width, args.height, args.fps, args.bitrate)?;
    let (mut units, mut keyframes) = (Vec::new(), Vec::new());
    for index in 0..args.frames {
        if index % args.gop == 0 {
            encoder.request_keyframe();
        }
        let capture = Duration::from_nanos(u64::from(index) * 1_000_000_000 / u64::from(args.fps));
        encoder.submit(VideoFrame::i420(
            args.width,
            args.height,
            picture.clone(),
            capture,
        )?)?;
        let frame = encoder
            .poll()?
            .ok_or_else(|| anyhow::anyhow!("openh264 skipped frame {index}"))?;
        anyhow::ensure!(
            frame.keyframe == (index % args.gop == 0),
            "frame {index}: keyframe {}, expected one every {} frames",
            frame.keyframe,
            args.gop
        );
        if frame.keyframe {
            keyframes.push(index);
        }
        units.push(frame.data);
    }
    Ok((units, keyframes))
}

/// One baseline JPEG of the bands.
pub fn encode_jpeg(width: u16, height: u16, quality: u8) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        width > 0 && height > 0 && (1..=100).contains(&quality),
        "--width and --height must be > 0, --quality 1..=100"
    );
    let rgb: Vec<u8> = (0..u32::from(height))
        .flat_map(|_| (0..u32::from(width)).flat_map(|x| band_at(x, u32::from(width))))
        .collect();
    let mut jpeg = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, quality);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
    encoder.encode(&rgb, width, height, jpeg_encoder::ColorType::Rgb)?;
    Ok(jpeg)
}

/// Write `stream` (of `frames` frames, decodable from each of `keyframes`) to `out`, and say
/// what it is.
fn write_sample(
    out: PathBuf,
    (width, height): (u32, u32),
    frames: u32,
    keyframes: Vec<u32>,
    stream: &[u8],
) -> anyhow::Result<SampleSummary> {
    std::fs::File::create(&out)
        .and_then(|mut f| f.write_all(stream))
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    Ok(SampleSummary {
        path: out,
        width,
        height,
        frames,
        keyframes,
        bytes: stream.len(),
        bands: BANDS
            .iter()
            .map(|(name, [r, g, b])| format!("{name}={r},{g},{b}"))
            .collect(),
    })
}

pub fn run(args: SampleArgs) -> anyhow::Result<SampleSummary> {
    let (units, keyframes) = encode(&args)?;
    let size = (args.width, args.height);
    write_sample(args.out, size, args.frames, keyframes, &units.concat())
}

pub fn run_mjpeg(args: MjpegArgs) -> anyhow::Result<SampleSummary> {
    anyhow::ensure!(args.frames > 0, "--frames must be > 0");
    // A still picture: every frame is the same JPEG.
    let jpeg = encode_jpeg(args.width, args.height, args.quality)?;
    let stream = jpeg.repeat(args.frames as usize);
    let size = (u32::from(args.width), u32::from(args.height));
    let every = (0..args.frames).collect();
    write_sample(args.out, size, args.frames, every, &stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::media::annexb::{self, NalType};

    #[test]
    fn the_mjpeg_sample_is_baseline_jpegs_that_decode_to_the_bands() {
        let jpeg = encode_jpeg(160, 96, 85).unwrap();
        assert_eq!(&jpeg[..2], [0xff, 0xd8], "SOI first");
        assert_eq!(&jpeg[jpeg.len() - 2..], [0xff, 0xd9], "EOI last");
        assert!(
            jpeg.windows(2).any(|m| m == [0xff, 0xc0]),
            "a baseline frame header (SOF0)"
        );
        // The decoder roomcast runs on MJPEG cameras, to I420.
        let mut i420 = Vec::new();
        roomcast::media::mjpeg::decode_i420(&jpeg, 160, 96, &mut i420).unwrap();
        for (i, (name, want)) in BANDS.iter().enumerate() {
            let x = (2 * i + 1) * 160 / 8;
            let (y, u, v) = (
                i420[48 * 160 + x],
                i420[160 * 96 + 24 * 80 + x / 2],
                i420[160 * 96 + 80 * 48 + 24 * 80 + x / 2],
            );
            let (wy, wu, wv) = roomcast::media::synthetic::rgb_to_yuv(*want);
            for (got, want, plane) in [(y, wy, "Y"), (u, wu, "U"), (v, wv, "V")] {
                assert!(
                    got.abs_diff(want) <= 6,
                    "{name} band at x={x}: {plane} {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn sample_has_an_idr_with_parameter_sets_every_gop_and_decodes_to_the_bands() {
        let args = SampleArgs {
            width: 160,
            height: 96,
            frames: 20,
            fps: 15,
            gop: 10,
            bitrate: 300,
            out: PathBuf::new(),
        };
        let (units, keyframes) = encode(&args).unwrap();
        assert_eq!(keyframes, [0, 10]);
        for (index, unit) in units.iter().enumerate() {
            let kinds: Vec<NalType> = annexb::split(unit)
                .unwrap()
                .iter()
                .map(|u| u.kind(unit))
                .collect();
            let idr = kinds.contains(&NalType::Idr);
            assert_eq!(idr, index % 10 == 0, "frame {index}: {kinds:?}");
            assert_eq!(
                kinds.contains(&NalType::Sps),
                idr,
                "frame {index}: {kinds:?}"
            );
        }
        let stream = units.concat();
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let mut rgb = vec![0u8; 160 * 96 * 3];
        let mut decoded = 0;
        for packet in openh264::nal_units(&stream) {
            if let Ok(Some(yuv)) = decoder.decode(packet) {
                use openh264::formats::YUVSource;
                assert_eq!(yuv.dimensions(), (160, 96));
                yuv.write_rgb8(&mut rgb);
                decoded += 1;
            }
        }
        assert!(decoded >= 19, "{decoded} pictures decoded");
        for (i, (name, want)) in BANDS.iter().enumerate() {
            let x = (2 * i as u32 + 1) * 160 / 8;
            let at = ((48 * 160 + x) * 3) as usize;
            let got = &rgb[at..at + 3];
            for c in 0..3 {
                assert!(
                    got[c].abs_diff(want[c]) <= 24,
                    "{name} band at x={x}: {got:?}, want {want:?}"
                );
            }
        }
    }
}

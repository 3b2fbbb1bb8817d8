//! MJPEG camera frames → packed I420 for the H.264 encoder, decoded in software.
//!
//! Many USB cameras give their larger sizes only as MJPEG. Decoding costs CPU on every frame
//! (more than YUYV's repacking by far), so a camera is opened as MJPEG only when it offers none
//! of H.264, YUYV, NV12 or YU12, and a warning says so once. zune-jpeg is pure Rust: nothing more
//! to link into the static board binary. It decodes to full-resolution YCbCr (4:4:4, its chroma
//! upsampled); each 2×2 block's chroma is averaged back down to 4:2:0 here.
//!
//! JPEG's YCbCr is full range (JFIF: Y, Cb and Cr over 0..=255), but an H.264 stream that says
//! nothing of its range (openh264 writes no VUI range flag) is read as limited range (Y 16..=235,
//! Cb and Cr 16..=240): each value is scaled into that, or every picture at the far end would come
//! out with its contrast and saturation stretched (a light pink 10 levels too bright).
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Decode one JPEG of `width`×`height` (even sizes, as the config requires) into packed I420
/// in `out`: Y, then U, then V.
pub fn decode_i420(jpeg: &[u8], width: u32, height: u32, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let (w, h) = (width as usize, height as usize);
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::YCbCr)
        // A corrupt header cannot make the decoder allocate more than the negotiated size.
        .set_max_width(w)
        .set_max_height(h);
    let mut decoder = JpegDecoder::new_with_options(jpeg, options);
    let ycbcr = decoder
        .decode()
        .map_err(|e| anyhow::anyhow!("MJPEG frame does not decode: {e:?}"))?;
    let (dw, dh) = decoder
        .info()
        .map_or((0, 0), |i| (usize::from(i.width), usize::from(i.height)));
    anyhow::ensure!(
        (dw, dh) == (w, h),
        "the camera sent a {dw}x{dh} JPEG in a {w}x{h} stream"
    );
    let components = decoder
        .get_output_colorspace()
        .map_or(0, |c| c.num_components());
    anyhow::ensure!(
        components == 3 && ycbcr.len() >= w * h * 3,
        "MJPEG frame decoded to {components} components, not YCbCr"
    );
    let (cw, ch) = (w / 2, h / 2);
    out.resize(w * h + 2 * cw * ch, 0);
    let (y_out, chroma) = out.split_at_mut(w * h);
    let (u_out, v_out) = chroma.split_at_mut(cw * ch);
    for (y, px) in y_out.iter_mut().zip(ycbcr.chunks_exact(3)) {
        *y = limited_luma(px[0]);
    }
    let row_len = w * 3;
    for row in 0..ch {
        let top = &ycbcr[2 * row * row_len..][..row_len];
        let bottom = &ycbcr[(2 * row + 1) * row_len..][..row_len];
        for x in 0..cw {
            let at = 6 * x;
            let avg = |c: usize| {
                let sum = u16::from(top[at + c])
                    + u16::from(top[at + 3 + c])
                    + u16::from(bottom[at + c])
                    + u16::from(bottom[at + 3 + c]);
                limited_chroma((sum + 2) / 4)
            };
            u_out[row * cw + x] = avg(1);
            v_out[row * cw + x] = avg(2);
        }
    }
    Ok(())
}

/// A full-range luma value in limited range: 0..=255 onto 16..=235, rounded.
fn limited_luma(y: u8) -> u8 {
    ((u32::from(y) * 219 + 16 * 255 + 127) / 255) as u8
}

/// A full-range chroma value (0..=255 around 128) in limited range (16..=240 around 128).
fn limited_chroma(c: u16) -> u8 {
    ((u32::from(c) * 224 + 128 * 31 + 127) / 255) as u8
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `width`×`height` JPEG (4:2:0, quality 95) whose left half is dark and blue-ish and whose
    /// right half is bright and red-ish, in YCbCr.
    pub(crate) fn two_halves_jpeg(width: u16, height: u16) -> Vec<u8> {
        let mut pixels = Vec::new();
        for _ in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(if x < width / 2 {
                    &[60, 170, 100]
                } else {
                    &[200, 90, 180]
                });
            }
        }
        let mut jpeg = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 95);
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
        encoder
            .encode(&pixels, width, height, jpeg_encoder::ColorType::Ycbcr)
            .unwrap();
        jpeg
    }

    #[test]
    fn a_jpeg_decodes_to_i420_with_its_luma_and_chroma_in_place() {
        let (w, h) = (64u32, 48u32);
        let jpeg = two_halves_jpeg(w as u16, h as u16);
        let mut out = Vec::new();
        decode_i420(&jpeg, w, h, &mut out).unwrap();
        let (w, h) = (w as usize, h as usize);
        let (cw, ch) = (w / 2, h / 2);
        assert_eq!(out.len(), w * h + 2 * cw * ch);
        let (y, rest) = out.split_at(w * h);
        let (u, v) = rest.split_at(cw * ch);
        // Away from the edge between the halves (JPEG rings a few pixels there), the values
        // are the ones encoded, in limited range (Y 60 and 200 are 68 and 188; Cb/Cr 170, 100,
        // 90, 180 are 165, 104, 95, 174), within the loss of quality 95.
        let near = |got: u8, want: u8| got.abs_diff(want) <= 4;
        for row in [0, h / 2, h - 1] {
            assert!(near(y[row * w + 4], 68), "left Y {}", y[row * w + 4]);
            assert!(
                near(y[row * w + w - 5], 188),
                "right Y {}",
                y[row * w + w - 5]
            );
        }
        for row in [0, ch / 2, ch - 1] {
            let (left, right) = (row * cw + 2, row * cw + cw - 3);
            assert!(
                near(u[left], 165) && near(v[left], 104),
                "left {} {}",
                u[left],
                v[left]
            );
            assert!(
                near(u[right], 95) && near(v[right], 174),
                "right {} {}",
                u[right],
                v[right]
            );
        }
    }

    #[test]
    fn full_range_values_land_on_the_limited_range_ends_and_middle() {
        assert_eq!((limited_luma(0), limited_luma(255)), (16, 235));
        assert_eq!(
            (limited_chroma(0), limited_chroma(128), limited_chroma(255)),
            (16, 128, 240)
        );
    }

    #[test]
    fn a_jpeg_of_another_size_or_a_broken_one_is_an_error() {
        let jpeg = two_halves_jpeg(64, 48);
        let mut out = Vec::new();
        let e = decode_i420(&jpeg, 128, 48, &mut out).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "the camera sent a 64x48 JPEG in a 128x48 stream"
        );
        // Larger than the stream's size: refused before anything is allocated for it.
        assert!(decode_i420(&jpeg, 32, 48, &mut out).is_err());
        assert!(decode_i420(&[0xff, 0xd8], 64, 48, &mut out).is_err());
    }
}

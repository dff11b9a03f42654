//! sandgen example plugin: an image classification dataset read from a
//! granted folder, decoded inside the sandbox.
//!
//! Decoders of untrusted formats are where memory-safety bugs live: here
//! JPEG and PNG files are decoded, resized and centre-cropped in the guest,
//! so that a hostile file reaches nothing but the sandbox (its memory
//! limit, its fuel, its timeout).
//!
//! `images` takes `{"dir": "/data", "size": 224}`: `dir` holds one folder
//! per class (their names, sorted, give the labels 0, 1, ...), each holding
//! `.jpg`, `.jpeg` or `.png` files (sorted by name). Each item is
//! `(image, label)`: the image a `uint8` array of shape `[size, size, 3]`
//! (RGB, height × width × channels: the file resized so that its shorter
//! side is `size`, bilinear, then cut to its centre square; grayscale is
//! repeated into the three channels, alpha is dropped). Workers share the
//! files: worker `i` of `n` reads files `i`, `i + n`, ... of the sorted list.
//!
//! Limits, each a clear error naming the file: files over 64 MiB, images
//! wider or taller than 16,384 pixels or with more than 40 million pixels
//! (checked from the header, before any pixel is decoded), and PNG decoders
//! that would allocate more than 256 MiB. A truncated or malformed file is
//! an error too (the JPEG decoder runs in strict mode). The error ends the
//! pass; design section 15's `on_failure="skip"` is how a training run
//! leaves such a file out and goes on.

use std::path::Path;

use fast_image_resize as fr;
use sandgen_guest::{Array, Error, Generator, export_plugin};
use serde::Deserialize;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// The largest file read.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// The widest or tallest image decoded.
const MAX_SIDE: usize = 16_384;
/// The most pixels an image may have.
const MAX_PIXELS: u64 = 40_000_000;
/// The most a PNG decode may allocate besides the image.
const MAX_PNG_BYTES: usize = 256 << 20;

#[derive(Deserialize)]
struct Args {
    dir: String,
    #[serde(default = "default_size")]
    size: u32,
}

fn default_size() -> u32 {
    224
}

/// `(uint8 [size, size, 3] image, label)` for every image file of `dir`.
struct Images {
    /// This worker's files and their labels.
    files: Vec<(String, u64)>,
    size: u32,
}

impl Generator for Images {
    const NAME: &'static str = "images";
    const DESCRIPTION: &'static str =
        "yields (uint8 [size, size, 3] image, label) for each JPEG and PNG file of dir/<class>/";
    type Args = Args;
    type Item = (Array<'static>, u64);
    type Iter = Pass;

    fn create(args: Args) -> Result<Self, Error> {
        if args.size == 0 || args.size as usize > MAX_SIDE {
            return Err(Error::msg(format!(
                "size must be from 1 to {MAX_SIDE}, not {}",
                args.size
            )));
        }
        let files = dataset(Path::new(&args.dir))?;
        let files = sandgen_guest::worker().shard(files).collect();
        Ok(Images {
            files,
            size: args.size,
        })
    }

    fn iter(&mut self) -> Result<Self::Iter, Error> {
        Ok(Pass {
            files: self.files.clone().into_iter(),
            size: self.size,
        })
    }

    /// Passes over files without reading them: a resume, or
    /// `on_failure="skip"` leaving out a bad file, decodes none of the
    /// files it skips.
    fn skip(pass: &mut Pass, count: u64) -> bool {
        match usize::try_from(count) {
            Ok(0) => true,
            Ok(count) => pass.files.nth(count - 1).is_some(),
            Err(_) => pass.files.nth(usize::MAX).is_some(),
        }
    }
}

/// One pass: the worker's files, each decoded when it is asked for.
struct Pass {
    files: std::vec::IntoIter<(String, u64)>,
    size: u32,
}

impl Iterator for Pass {
    type Item = Result<(Array<'static>, u64), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let (path, label) = self.files.next()?;
        let image = load(Path::new(&path), self.size)
            .map_err(|why| Error::msg(format!("image {path}: {why}")));
        Some(image.map(|image| (image, label)))
    }
}

/// Every image file under `dir/<class>/`, sorted, with its class's index.
fn dataset(dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    let listed = |dir: &Path| -> Result<Vec<std::fs::DirEntry>, Error> {
        let mut entries = std::fs::read_dir(dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::msg(format!(
                    "cannot read the folder {}: {e} (is it granted with dirs=?)",
                    dir.display()
                ))
            })?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        Ok(entries)
    };
    let mut files = Vec::new();
    let classes = listed(dir)?
        .into_iter()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()));
    for (label, class) in classes.enumerate() {
        for file in listed(&class.path())? {
            let path = file.path();
            let image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()));
            if image && file.file_type().is_ok_and(|t| t.is_file()) {
                files.push((path.display().to_string(), label as u64));
            }
        }
    }
    Ok(files)
}

/// One file, decoded, resized and cropped.
fn load(path: &Path, size: u32) -> Result<Array<'static>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "the file has {len} bytes, more than the {MAX_FILE_BYTES} this plugin reads"
        ));
    }
    let data = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let (width, height, rgb) = if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_rgb(&data)?
    } else if data.starts_with(&[0xFF, 0xD8]) {
        jpeg_rgb(&data)?
    } else {
        return Err("not a JPEG or PNG file (by its first bytes)".into());
    };
    let pixels = fit(width, height, rgb, size)?;
    Array::from_vec(pixels, [u64::from(size), u64::from(size), 3]).map_err(|e| e.to_string())
}

/// Refuses an image whose header claims more than the limits.
fn check_size(width: usize, height: usize) -> Result<(), String> {
    let pixels = width as u64 * height as u64;
    if width > MAX_SIDE || height > MAX_SIDE || pixels > MAX_PIXELS {
        return Err(format!(
            "the image claims {width}×{height} pixels, more than this plugin decodes \
             ({MAX_SIDE} a side, {MAX_PIXELS} in all)"
        ));
    }
    if pixels == 0 {
        return Err("the image has no pixels".into());
    }
    Ok(())
}

fn jpeg_rgb(data: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    let failed = |e: zune_jpeg::errors::DecodeErrors| format!("cannot decode the JPEG: {e}");
    decoder.decode_headers().map_err(failed)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or("cannot decode the JPEG: no frame header")?;
    check_size(width, height)?;
    let rgb = decoder.decode().map_err(failed)?;
    Ok((width as u32, height as u32, rgb))
}

fn png_rgb(data: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let failed = |e: png::DecodingError| format!("cannot decode the PNG: {e}");
    let limits = png::Limits {
        bytes: MAX_PNG_BYTES,
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(data), limits);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    // The size from the header alone, before the decoder sets up its rows.
    let (width, height) = decoder.read_header_info().map_err(failed)?.size();
    check_size(width as usize, height as usize)?;
    let mut reader = decoder.read_info().map_err(failed)?;
    let len = reader
        .output_buffer_size()
        .ok_or("cannot decode the PNG: its image does not fit in memory")?;
    let mut buf = vec![0; len];
    let info = reader.next_frame(&mut buf).map_err(failed)?;
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        // `normalize_to_color8` expands palettes into RGB or RGBA.
        png::ColorType::Indexed => {
            return Err("cannot decode the PNG: an unexpanded palette".into());
        }
    };
    Ok((width, height, rgb))
}

/// The image resized so that its shorter side is `size` (bilinear), cut to
/// its centre `size` × `size` square, in one pass.
fn fit(width: u32, height: u32, rgb: Vec<u8>, size: u32) -> Result<Vec<u8>, String> {
    let source = fr::images::Image::from_vec_u8(width, height, rgb, fr::PixelType::U8x3)
        .map_err(|e| format!("cannot resize it: {e}"))?;
    let mut out = fr::images::Image::new(size, size, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .fit_into_destination(Some((0.5, 0.5)));
    fr::Resizer::new()
        .resize(&source, &mut out, &options)
        .map_err(|e| format!("cannot resize it: {e}"))?;
    Ok(out.into_vec())
}

export_plugin!(generators: [Images]);

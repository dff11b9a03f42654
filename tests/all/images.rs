//! The image example (examples/images): JPEG and PNG files, made here in
//! every mode a dataset holds (RGB, grayscale, alpha, 16-bit, baseline and
//! progressive JPEG, several sizes), decoded, resized and cropped in the
//! sandbox into `(uint8 [size, size, 3], label)`; and hostile files, each a
//! clear error naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sandgen::{Array, Dtype, ErrorKind, OnFailure};
use serde_json::json;

use crate::util::{Fixture, artifacts, assert_error, plugin, temp_dir};

/// How one test image is written.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Rgb,
    Gray,
    Rgba,
    GrayAlpha,
    Rgb16,
    Jpeg,
    ProgressiveJpeg,
    GrayJpeg,
}

const MODES: [(Mode, u32, u32); 8] = [
    (Mode::Rgb, 300, 200),
    (Mode::Gray, 50, 80),
    (Mode::Rgba, 224, 224),
    (Mode::GrayAlpha, 99, 401),
    (Mode::Rgb16, 64, 64),
    (Mode::Jpeg, 640, 480),
    (Mode::ProgressiveJpeg, 100, 300),
    (Mode::GrayJpeg, 333, 333),
];

const CLASSES: [&str; 3] = ["cat", "dog", "fish"];

/// The solid colour of image `j` of class `c`.
fn colour(c: usize, j: usize) -> [u8; 3] {
    [
        (40 * c + 25 * j) as u8,
        (220 - 20 * j) as u8,
        (30 + 70 * c) as u8,
    ]
}

/// What the plugin yields for that image: grayscale modes keep the red.
fn expected(mode: Mode, [r, g, b]: [u8; 3]) -> [u8; 3] {
    match mode {
        Mode::Gray | Mode::GrayAlpha | Mode::GrayJpeg => [r, r, r],
        _ => [r, g, b],
    }
}

fn png(
    path: &Path,
    width: u32,
    height: u32,
    colour: png::ColorType,
    depth: png::BitDepth,
    pixel: &[u8],
) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(colour);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().unwrap();
    let data = pixel.repeat((width * height) as usize);
    writer.write_image_data(&data).unwrap();
}

fn jpeg(width: u32, height: u32, gray: bool, progressive: bool, [r, g, b]: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 95);
    encoder.set_progressive(progressive);
    let (data, kind) = if gray {
        (
            vec![r; (width * height) as usize],
            jpeg_encoder::ColorType::Luma,
        )
    } else {
        (
            [r, g, b].repeat((width * height) as usize),
            jpeg_encoder::ColorType::Rgb,
        )
    };
    encoder
        .encode(&data, width as u16, height as u16, kind)
        .unwrap();
    out
}

/// Writes image `j` of class `c` into `dir`.
fn write_image(dir: &Path, c: usize, j: usize) {
    let (mode, width, height) = MODES[j % MODES.len()];
    let [r, g, b] = colour(c, j);
    let name = |ext: &str| dir.join(format!("{j:02}-{mode:?}.{ext}"));
    use png::{BitDepth as D, ColorType as C};
    match mode {
        Mode::Rgb => png(&name("png"), width, height, C::Rgb, D::Eight, &[r, g, b]),
        Mode::Gray => png(&name("png"), width, height, C::Grayscale, D::Eight, &[r]),
        Mode::Rgba => png(
            &name("png"),
            width,
            height,
            C::Rgba,
            D::Eight,
            &[r, g, b, 128],
        ),
        Mode::GrayAlpha => png(
            &name("PNG"),
            width,
            height,
            C::GrayscaleAlpha,
            D::Eight,
            &[r, 9],
        ),
        Mode::Rgb16 => {
            let pixel: Vec<u8> = [r, g, b].iter().flat_map(|&v| [v, v]).collect();
            png(&name("png"), width, height, C::Rgb, D::Sixteen, &pixel);
        }
        Mode::Jpeg | Mode::ProgressiveJpeg | Mode::GrayJpeg => {
            let gray = matches!(mode, Mode::GrayJpeg);
            let progressive = matches!(mode, Mode::ProgressiveJpeg);
            let ext = if progressive { "jpeg" } else { "jpg" };
            std::fs::write(name(ext), jpeg(width, height, gray, progressive, [r, g, b])).unwrap();
        }
    }
}

/// A dataset of `per_class` images in each of the three classes, and a
/// file that is not an image (left out).
fn dataset(per_class: usize) -> PathBuf {
    let root = temp_dir("images");
    for (c, class) in CLASSES.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..per_class {
            write_image(&dir, c, j);
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    }
    root
}

fn images() -> Fixture {
    plugin(artifacts::EXAMPLE_IMAGES)
}

/// What a test sees of an item: the image's shape, the lowest and highest
/// value of each channel over its pixels, and the label.
type Seen = (Vec<u64>, [u8; 3], [u8; 3], u64);

/// Every item of a pass, as [`Seen`].
fn read(iterable: &Arc<sandgen::Iterable>) -> Vec<Seen> {
    let mut batches = iterable.batches().unwrap();
    let mut items = Vec::new();
    while let Some(batch) = batches.next_batch() {
        let batch = batch.unwrap();
        for item in batch.decode::<(Array<'_>, u64)>(batches.encoding()) {
            let (image, label) = item.unwrap();
            assert_eq!(image.dtype(), Dtype::Uint8);
            let data = image.data();
            let (mut low, mut high) = ([255u8; 3], [0u8; 3]);
            for pixel in data.chunks_exact(3) {
                for k in 0..3 {
                    low[k] = low[k].min(pixel[k]);
                    high[k] = high[k].max(pixel[k]);
                }
            }
            items.push((image.shape().to_vec(), low, high, label));
        }
    }
    items
}

/// Within `tolerance` of `want` on every channel, for every pixel.
fn close(low: [u8; 3], high: [u8; 3], want: [u8; 3], tolerance: u8) -> bool {
    (0..3).all(|k| want[k].abs_diff(low[k]) <= tolerance && want[k].abs_diff(high[k]) <= tolerance)
}

both_isolations!(every_mode_decodes_into_its_label_and_colour);
fn every_mode_decodes_into_its_label_and_colour() {
    let per_class = 8;
    let root = dataset(per_class);
    let iterable = Arc::new(
        images()
            .generator("images")
            .args(&json!({"dir": "/data"}))
            .dir(&root, "/data")
            .build()
            .unwrap(),
    );
    let items = read(&iterable);
    assert_eq!(
        items.len(),
        CLASSES.len() * per_class,
        "every image, not notes.txt"
    );
    for (i, (shape, low, high, label)) in items.into_iter().enumerate() {
        let (c, j) = (i / per_class, i % per_class);
        let (mode, ..) = MODES[j % MODES.len()];
        assert_eq!((shape, label), (vec![224, 224, 3], c as u64), "{mode:?}");
        // Resizing a solid image keeps its colour; JPEG is lossy.
        let tolerance = if matches!(mode, Mode::Jpeg | Mode::ProgressiveJpeg | Mode::GrayJpeg) {
            3
        } else {
            0
        };
        let want = expected(mode, colour(c, j));
        assert!(
            close(low, high, want, tolerance),
            "{mode:?} of class {c}: pixels from {low:?} to {high:?}, want {want:?}"
        );
    }
}

#[test]
fn workers_share_the_files_and_size_is_the_side() {
    let _watch = crate::util::watchdog("images::workers_share_the_files_and_size_is_the_side");
    let root = dataset(5);
    let build = |workers: usize| {
        Arc::new(
            images()
                .generator("images")
                .args(&json!({"dir": "/data", "size": 32}))
                .dir(&root, "/data")
                .workers(workers)
                .build()
                .unwrap(),
        )
    };
    let one = read(&build(1));
    let three = read(&build(3));
    assert_eq!(one.len(), 15);
    assert!(one.iter().all(|(shape, ..)| *shape == [32, 32, 3]));
    // In order, three workers give the very items of one.
    assert_eq!(three, one);
}

/// A class folder with a good image, then `bad` under `name`.
fn with_bad_file(name: &str, bad: &[u8]) -> PathBuf {
    let root = temp_dir("bad-images");
    let dir = root.join("only");
    std::fs::create_dir_all(&dir).unwrap();
    write_image(&dir, 0, 0);
    std::fs::write(dir.join(name), bad).unwrap();
    root
}

/// `png` with its IHDR's width and height set to `side` (CRC resealed).
fn claiming(mut png: Vec<u8>, side: u32) -> Vec<u8> {
    // Signature (8), length (4), "IHDR" (4), then width and height.
    png[16..20].copy_from_slice(&side.to_be_bytes());
    png[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A JPEG whose frame header claims `side` × `side` pixels.
fn jpeg_claiming(side: u16) -> Vec<u8> {
    let mut data = jpeg(16, 16, false, false, [1, 2, 3]);
    let sof = data
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline frame header");
    // Marker (2), length (2), precision (1), then height and width.
    data[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    data[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    data
}

/// A PNG of `side` × `side` black pixels: a few kilobytes that would
/// decode into `side`² bytes.
fn bomb(side: u32) -> Vec<u8> {
    let path = temp_dir("bomb").join("bomb.png");
    png(
        &path,
        side,
        side,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &[0],
    );
    std::fs::read(path).unwrap()
}

both_isolations!(hostile_files_are_clear_errors_that_name_the_file);
fn hostile_files_are_clear_errors_that_name_the_file() {
    let good_jpeg = jpeg(640, 480, false, false, [9, 9, 9]);
    let small_png = {
        let path = temp_dir("small").join("x.png");
        png(
            &path,
            4,
            4,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &[1, 2, 3],
        );
        std::fs::read(path).unwrap()
    };
    let bomb = bomb(7000);
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "truncated.jpg",
            good_jpeg[..good_jpeg.len() / 2].to_vec(),
            "cannot decode the JPEG",
        ),
        (
            "huge.jpg",
            jpeg_claiming(50_000),
            "cannot decode the JPEG: \"Image width 50000 greater than width limit 16384",
        ),
        (
            "huge.png",
            claiming(small_png.clone(), 50_000),
            "the image claims 50000×50000 pixels, more than this plugin decodes",
        ),
        (
            "bomb.png",
            bomb,
            "the image claims 7000×7000 pixels, more than this plugin decodes (16384 a side, 40000000 in all)",
        ),
        (
            "truncated.png",
            small_png[..small_png.len() - 20].to_vec(),
            "cannot decode the PNG",
        ),
        ("text.png", b"hello".to_vec(), "not a JPEG or PNG file"),
    ];
    for (name, bad, why) in cases {
        let root = with_bad_file(name, &bad);
        let iterable = images()
            .generator("images")
            .args(&json!({"dir": "/data", "size": 16}))
            .dir(&root, "/data")
            .build()
            .unwrap();
        let mut pass = iterable.iter_raw().unwrap();
        assert!(
            pass.next_item().unwrap().is_ok(),
            "{name}: the good image comes first"
        );
        let error = pass.next_item().expect("an error").unwrap_err();
        assert_error(
            &error,
            ErrorKind::IterationFailed,
            &format!("image /data/only/{name}: {why}"),
        );
    }
}

#[test]
fn an_ungranted_folder_says_to_grant_it() {
    let _watch = crate::util::watchdog("images::an_ungranted_folder_says_to_grant_it");
    let error = images()
        .generator("images")
        .args(&json!({"dir": "/data"}))
        .build()
        .unwrap_err();
    assert_error(
        &error,
        ErrorKind::CreateFailed,
        "cannot read the folder /data: ",
    );
    assert!(
        error.to_string().contains("(is it granted with dirs=?)"),
        "{error}"
    );
}

both_isolations!(a_training_pass_leaves_out_bad_files_and_says_which);
/// `on_failure = skip` (design section 15): a truncated JPEG and an
/// oversized PNG among good images are left out, each named in the pass's
/// failures, and every good image comes, in order.
fn a_training_pass_leaves_out_bad_files_and_says_which() {
    let per_class = 2;
    let build = |root: &Path, on_failure| {
        Arc::new(
            images()
                .generator("images")
                .args(&json!({"dir": "/data", "size": 16}))
                .dir(root, "/data")
                .on_failure(on_failure)
                .build()
                .unwrap(),
        )
    };
    let expected = read(&build(&dataset(per_class), OnFailure::Stop));
    let root = dataset(per_class);
    let good_jpeg = jpeg(64, 48, false, false, [9, 9, 9]);
    let truncated = &good_jpeg[..good_jpeg.len() / 2];
    std::fs::write(root.join("cat/00a-truncated.jpg"), truncated).unwrap();
    let small_png = temp_dir("small").join("x.png");
    png(
        &small_png,
        4,
        4,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &[1, 2, 3],
    );
    let huge = claiming(std::fs::read(small_png).unwrap(), 50_000);
    std::fs::write(root.join("dog/01a-huge.png"), huge).unwrap();
    // Without on_failure, the first bad file ends the pass.
    let mut stopping = build(&root, OnFailure::Stop).batches().unwrap();
    let error = std::iter::from_fn(|| stopping.next_batch())
        .find_map(Result::err)
        .unwrap();
    assert_error(&error, ErrorKind::IterationFailed, "00a-truncated.jpg");
    let skipping = build(&root, OnFailure::Skip);
    assert_eq!(read(&skipping), expected);
    let left_out: Vec<(Option<u64>, String)> = skipping
        .failures()
        .iter()
        .map(|f| {
            (
                f.skipped(),
                f.error().plugin_message().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(left_out.len(), 2, "{left_out:?}");
    // Cat's files: 00-Rgb, 00a-truncated (item 1), 01-Gray; then dog's:
    // 00-Rgb, 01-Gray, 01a-huge (item 5).
    assert_eq!(left_out[0].0, Some(1));
    assert!(
        left_out[0]
            .1
            .starts_with("image /data/cat/00a-truncated.jpg: cannot decode the JPEG"),
        "{left_out:?}"
    );
    assert_eq!(left_out[1].0, Some(5));
    assert!(
        left_out[1].1.starts_with(
            "image /data/dog/01a-huge.png: the image claims 50000×50000 pixels, more than this plugin decodes"
        ),
        "{left_out:?}"
    );
}

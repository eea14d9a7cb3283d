//! `loss.png`: the training loss per step (blue) and validation loss (red squares) against the
//! step, with numeric tick labels, written with the `png` encoder. A small pixel canvas instead of
//! a plotting library: no font files or system libraries needed on the user's machine.

use std::path::Path;

use crate::error::{Error, Result};
use crate::report::Metric;

const W: usize = 720;
const H: usize = 420;
const LEFT: usize = 60;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;

/// 3x5 glyphs for the characters tick labels use.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        _ => return None,
    })
}

struct Canvas(Vec<u8>);

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.0[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for k in 0..=n {
            let t = k as f64 / n as f64;
            self.set(
                (x0 + t * (x1 - x0)).round() as i64,
                (y0 + t * (y1 - y0)).round() as i64,
                rgb,
            );
        }
    }

    /// Text at 2x scale, top-left at (x, y).
    fn text(&mut self, x: i64, y: i64, s: &str) {
        for (k, c) in s.chars().enumerate() {
            let Some(g) = glyph(c) else { continue };
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            let px = x + (k as i64) * 8 + col * 2 + dx;
                            self.set(px, y + row as i64 * 2 + dy, [40, 40, 40]);
                        }
                    }
                }
            }
        }
    }
}

/// Writes the plot of `metrics` to `path` (atomically).
pub fn loss_plot(metrics: &[Metric], path: &Path) -> Result<()> {
    let train: Vec<(f64, f64)> = metrics
        .iter()
        .filter(|m| m.kind == "train" && m.loss.is_finite())
        .map(|m| (m.step as f64, m.loss))
        .collect();
    let eval: Vec<(f64, f64)> = metrics
        .iter()
        .filter(|m| m.kind == "eval" && m.loss.is_finite())
        .map(|m| (m.step as f64, m.loss))
        .collect();
    let all: Vec<&(f64, f64)> = train.iter().chain(&eval).collect();
    if all.is_empty() {
        return Ok(());
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if y_max - y_min < 1e-6 {
        y_min -= 0.5;
        y_max += 0.5;
    }
    let pad = (y_max - y_min) * 0.05;
    let (y_min, y_max) = (y_min - pad, y_max + pad);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let px = |x: f64| LEFT as f64 + x / x_max * pw;
    let py = |y: f64| TOP as f64 + (y_max - y) / (y_max - y_min) * ph;
    let mut c = Canvas(vec![255; W * H * 3]);
    // Grid and tick labels.
    for k in 0..=5 {
        let y = y_min + (y_max - y_min) * k as f64 / 5.0;
        c.line((px(0.0), py(y)), (px(x_max), py(y)), [225, 225, 225]);
        c.text(4, py(y) as i64 - 5, &format!("{y:.3}"));
        let x = x_max * k as f64 / 5.0;
        c.line((px(x), py(y_min)), (px(x), py(y_max)), [225, 225, 225]);
        c.text(
            px(x) as i64 - 8,
            (H - BOTTOM + 8) as i64,
            &format!("{}", x.round() as u64),
        );
    }
    let frame = [90, 90, 90];
    c.line((px(0.0), py(y_min)), (px(x_max), py(y_min)), frame);
    c.line((px(0.0), py(y_min)), (px(0.0), py(y_max)), frame);
    for w in train.windows(2) {
        c.line(
            (px(w[0].0), py(w[0].1)),
            (px(w[1].0), py(w[1].1)),
            [31, 119, 180],
        );
    }
    for &(x, y) in &eval {
        for dx in -3..=3 {
            for dy in -3..=3 {
                c.set(px(x) as i64 + dx, py(y) as i64 + dy, [214, 39, 40]);
            }
        }
    }
    crate::files::write_atomic(path, |tmp| {
        let file = std::fs::File::create(tmp)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&c.0)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
    .map_err(|e| match e {
        Error::Io { path, source } => Error::Io { path, source },
        other => other,
    })
}

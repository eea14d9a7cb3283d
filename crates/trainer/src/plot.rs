//! `loss.png`: drawn with `plotters` and an embedded font (DejaVu Sans, from the `dejavu` crate),
//! so no system fonts or libraries are needed on the user's machine.
//!
//! Two panels: the training loss per step (raw, faint) with its exponential moving average and
//! the validation losses joined, then the learning rate. Title with the run's name, labelled
//! axes, round ticks, a legend.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::report::Metric;

const W: u32 = 900;
const H: u32 = 640;
const FONT: &str = "sans-serif";

/// TensorBoard's default smoothing weight for its scalar charts.
pub const EMA_WEIGHT: f64 = 0.6;

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const EVAL: RGBColor = RGBColor(214, 39, 40);
const LR: RGBColor = RGBColor(44, 160, 44);

/// Registers the embedded font under plotters' `sans-serif` once per process.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Plot(
            "the embedded DejaVu Sans font did not load".into(),
        ))
    }
}

/// TensorBoard's smoothing: an exponential moving average, debiased at the start (so the first
/// point is the first value, not a fraction of it).
pub fn ema(values: &[f64], weight: f64) -> Vec<f64> {
    let mut last = 0.0;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            last = last * weight + (1.0 - weight) * v;
            last / (1.0 - weight.powi(i as i32 + 1))
        })
        .collect()
}

/// Decimals that tell ticks `step` apart.
fn decimals(range: f64) -> usize {
    let step = range / 6.0;
    if step <= 0.0 || !step.is_finite() {
        return 2;
    }
    (-step.log10().floor()).clamp(0.0, 8.0) as usize
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo < 1e-9 {
        let d = if lo.abs() > 1e-9 { lo.abs() * 0.1 } else { 1.0 };
        return (lo - d, hi + d);
    }
    let pad = (hi - lo) * 0.06;
    (lo - pad, hi + pad)
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Draws the plot of `metrics` titled `title` into an RGB buffer of `W x H`. `None` when there
/// is nothing to draw.
pub fn render(metrics: &[Metric], title: &str) -> Result<Option<Vec<u8>>> {
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
    let lr: Vec<(f64, f64)> = metrics
        .iter()
        .filter(|m| m.kind == "train")
        .filter_map(|m| m.lr.filter(|v| v.is_finite()).map(|v| (m.step as f64, v)))
        .collect();
    if train.is_empty() && eval.is_empty() {
        return Ok(None);
    }
    font()?;
    let smooth: Vec<(f64, f64)> = train
        .iter()
        .map(|p| p.0)
        .zip(ema(
            &train.iter().map(|p| p.1).collect::<Vec<_>>(),
            EMA_WEIGHT,
        ))
        .collect();
    let x_max = train.iter().chain(&eval).map(|p| p.0).fold(1.0, f64::max);
    let (y_lo, y_hi) = train
        .iter()
        .chain(&eval)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (y_lo, y_hi) = padded(y_lo, y_hi);
    let y_dec = decimals(y_hi - y_lo);

    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root
            .titled(title, (FONT, 22).into_font())
            .map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(if lr.is_empty() { H } else { H * 68 / 100 });

        let mut chart = ChartBuilder::on(&top)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, y_lo..y_hi)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 13))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format!("{y:.y_dec$}"))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(plot_error)?;
        if !train.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    train.iter().copied(),
                    TRAIN.mix(0.4).stroke_width(1),
                ))
                .map_err(plot_error)?
                .label("training loss")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TRAIN.mix(0.4)));
            chart
                .draw_series(LineSeries::new(
                    smooth.iter().copied(),
                    TRAIN.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(format!("training loss, EMA {EMA_WEIGHT}"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], TRAIN.stroke_width(2))
                });
        }
        if !eval.is_empty() {
            chart
                .draw_series(LineSeries::new(eval.iter().copied(), EVAL.stroke_width(2)))
                .map_err(plot_error)?
                .label("validation loss")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], EVAL.stroke_width(2)));
            chart
                .draw_series(eval.iter().map(|&p| Circle::new(p, 4, EVAL.filled())))
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 13))
            .draw()
            .map_err(plot_error)?;

        if !lr.is_empty() {
            let (lr_lo, lr_hi) = lr
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                    (a.min(p.1), b.max(p.1))
                });
            let (lr_lo, lr_hi) = padded(lr_lo.min(0.0), lr_hi);
            let mut chart = ChartBuilder::on(&bottom)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..x_max, lr_lo.max(0.0)..lr_hi)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("learning rate")
                .axis_desc_style((FONT, 15))
                .label_style((FONT, 13))
                .y_labels(4)
                .x_label_formatter(&|x| format!("{}", x.round() as i64))
                .y_label_formatter(&|y| format!("{y:.1e}"))
                .light_line_style(RGBColor(238, 238, 238))
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()
                .map_err(plot_error)?;
            chart
                .draw_series(LineSeries::new(lr.iter().copied(), LR.stroke_width(2)))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(Some(buf))
}

/// Writes the plot of `metrics`, titled `title`, to `path` (atomically). Nothing is written
/// when there is no finite loss.
pub fn loss_plot(metrics: &[Metric], title: &str, path: &Path) -> Result<()> {
    let Some(rgb) = render(metrics, title)? else {
        return Ok(());
    };
    crate::files::write_atomic(path, |tmp| {
        let file = std::fs::File::create(tmp)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W, H);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Vec<Metric> {
        let mut m = Vec::new();
        for step in 1..=30u64 {
            let loss = 2.0 / (step as f64).sqrt() + if step % 2 == 0 { 0.1 } else { -0.1 };
            m.push(Metric {
                step,
                loss,
                kind: "train".into(),
                lr: Some(2e-4 * (1.0 - step as f64 / 30.0)),
                grad_norm: Some(1.0),
                tokens: Some(100),
                elapsed_s: step as f64,
            });
            if step % 10 == 0 {
                m.push(Metric::eval(step, 1.9 / (step as f64).sqrt(), step as f64));
            }
        }
        m
    }

    #[test]
    fn the_ema_is_debiased_and_follows_tensorboard() {
        let s = ema(&[2.0, 1.0, 1.0], 0.6);
        assert!((s[0] - 2.0).abs() < 1e-12);
        // (0.6 * 0.8 + 0.4) / (1 - 0.36) = 0.88 / 0.64
        assert!((s[1] - 0.88 / 0.64).abs() < 1e-12, "{s:?}");
        assert!(s[2] < s[1]);
    }

    #[test]
    fn the_plot_has_both_series_text_and_the_learning_rate_panel() {
        let rgb = render(&metrics(), "run-a: training loss").unwrap().unwrap();
        let px = |x: u32, y: u32| {
            let i = ((y * W + x) * 3) as usize;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        let count = |c: RGBColor, rows: std::ops::Range<u32>| {
            rows.flat_map(|y| (0..W).map(move |x| (x, y)))
                .filter(|&(x, y)| px(x, y) == [c.0, c.1, c.2])
                .count()
        };
        assert!(count(TRAIN, 0..H * 68 / 100) > 200, "EMA line drawn");
        assert!(count(EVAL, 0..H * 68 / 100) > 50, "validation points drawn");
        assert!(
            count(LR, H * 68 / 100..H) > 200,
            "learning-rate panel drawn"
        );
        // Text (title, ticks, axis names) is dark anti-aliased glyphs: many dark pixels in the
        // title band and left of the plot area.
        let dark = |rows: std::ops::Range<u32>, cols: std::ops::Range<u32>| {
            rows.flat_map(|y| cols.clone().map(move |x| (x, y)))
                .filter(|&(x, y)| px(x, y).iter().all(|&v| v < 110))
                .count()
        };
        assert!(dark(0..34, 0..W) > 100, "title");
        assert!(dark(40..H * 60 / 100, 0..70) > 100, "y ticks and label");
    }

    #[test]
    fn nothing_is_drawn_without_a_finite_loss() {
        let m = vec![Metric::eval(1, f64::NAN, 0.0)];
        assert!(render(&m, "x").unwrap().is_none());
    }

    #[test]
    fn tick_decimals_follow_the_range() {
        assert_eq!(decimals(0.6), 1);
        assert_eq!(decimals(6.0), 0);
        assert_eq!(decimals(0.006), 3);
    }
}

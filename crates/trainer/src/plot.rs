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

/// A step axis tick: whole steps only (plotters may put ticks at half steps on short runs).
fn step_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
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
            .x_label_formatter(&step_label)
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
                .x_label_formatter(&step_label)
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
    write_png(&rgb, path)
}

/// Writes a `W x H` RGB buffer as PNG (atomically).
fn write_png(rgb: &[u8], path: &Path) -> Result<()> {
    crate::files::write_atomic(path, |tmp| {
        let file = std::fs::File::create(tmp)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W, H);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(rgb)
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

/// One trial of a hyperparameter search, as the sweep plot draws it.
#[derive(Debug, Clone)]
pub struct TrialCurve {
    /// Label in the legend.
    pub label: String,
    /// Validation losses `(step, loss)`.
    pub evals: Vec<(f64, f64)>,
    /// The objective (final validation loss), if the trial ended.
    pub objective: Option<f64>,
    /// The trial was stopped early.
    pub pruned: bool,
    /// `(setting, value)`: numeric values as numbers, others as their position in `categories`.
    pub settings: Vec<(String, f64)>,
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// `sweep.png`: the validation-loss curve of every trial (pruned ones dashed-faint) on top, and
/// below one panel per setting with the objective of each finished trial against the setting's
/// value. `settings` names the settings in order, with how to label their ticks.
pub fn sweep_plot(
    trials: &[TrialCurve],
    settings: &[(String, Vec<String>)],
    title: &str,
    path: &Path,
) -> Result<()> {
    if trials.iter().all(|t| t.evals.is_empty()) {
        return Ok(());
    }
    font()?;
    let all: Vec<(f64, f64)> = trials
        .iter()
        .flat_map(|t| t.evals.iter().copied())
        .collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (lo, hi) = padded(lo, hi);
    let dec = decimals(hi - lo);
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root
            .titled(title, (FONT, 22).into_font())
            .map_err(plot_error)?;
        let (top, bottom) =
            root.split_vertically(if settings.is_empty() { H } else { H * 62 / 100 });
        let mut chart = ChartBuilder::on(&top)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, lo..hi)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("validation loss")
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 13))
            .x_label_formatter(&step_label)
            .y_label_formatter(&|y| format!("{y:.dec$}"))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(plot_error)?;
        for (i, t) in trials.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = if t.pruned {
                color.mix(0.35).stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            let label = if t.pruned {
                format!("{} (pruned)", t.label)
            } else {
                t.label.clone()
            };
            chart
                .draw_series(LineSeries::new(t.evals.iter().copied(), style))
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 11))
            .draw()
            .map_err(plot_error)?;
        let panels = bottom.split_evenly((1, settings.len().max(1)));
        for (k, ((name, ticks), panel)) in settings.iter().zip(panels.iter()).enumerate() {
            let points: Vec<(f64, f64)> = trials
                .iter()
                .filter(|t| !t.pruned)
                .filter_map(|t| Some((t.settings.get(k)?.1, t.objective?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let categorical = !ticks.is_empty();
            let (x_lo, x_hi) = if categorical {
                (-0.5, ticks.len() as f64 - 0.5)
            } else {
                let (a, b) = points
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                        (a.min(p.0), b.max(p.0))
                    });
                padded(a, b)
            };
            let (o_lo, o_hi) = points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                    (a.min(p.1), b.max(p.1))
                });
            let (o_lo, o_hi) = padded(o_lo, o_hi);
            let odec = decimals(o_hi - o_lo);
            let mut c = ChartBuilder::on(panel)
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(if k == 0 { 58 } else { 44 })
                .build_cartesian_2d(x_lo..x_hi, o_lo..o_hi)
                .map_err(plot_error)?;
            let tick_names = ticks.clone();
            c.configure_mesh()
                .x_desc(name.as_str())
                .y_desc(if k == 0 { "final validation loss" } else { "" })
                .axis_desc_style((FONT, 13))
                .label_style((FONT, 11))
                .x_labels(if categorical { ticks.len() } else { 4 })
                .x_label_formatter(&move |x| {
                    if categorical {
                        let i = x.round();
                        if (x - i).abs() < 1e-6 && i >= 0.0 {
                            tick_names.get(i as usize).cloned().unwrap_or_default()
                        } else {
                            String::new()
                        }
                    } else if x.abs() != 0.0 && (x.abs() < 1e-2 || x.abs() >= 1e4) {
                        format!("{x:.1e}")
                    } else {
                        format!("{x}")
                    }
                })
                .y_label_formatter(&|y| format!("{y:.odec$}"))
                .light_line_style(RGBColor(240, 240, 240))
                .bold_line_style(RGBColor(220, 220, 220))
                .draw()
                .map_err(plot_error)?;
            c.draw_series(points.iter().map(|&p| Circle::new(p, 5, TRAIN.filled())))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    write_png(&buf, path)
}

//! The loss/accuracy curves of one model as an SVG (two panels: loss, accuracy; train and
//! validation in each).

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::summary::EpochStats;

pub fn curves_svg(model: &str, epochs: &[EpochStats]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(500);
        let last = epochs.len().max(2) as f64;
        let series = |f: fn(&EpochStats) -> f64| -> Vec<(f64, f64)> {
            epochs.iter().map(|e| (e.epoch as f64, f(e))).collect()
        };
        let panels = [
            (
                &left,
                "loss",
                [series(|e| e.train_loss), series(|e| e.val_loss)],
            ),
            (
                &right,
                "accuracy",
                [series(|e| e.train_accuracy), series(|e| e.val_accuracy)],
            ),
        ];
        for (area, what, [train, val]) in panels {
            let values = train.iter().chain(&val).map(|p| p.1);
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{model} {what}"), ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..last, (lo - pad)..(hi + pad))
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(what)
                .draw()
                .map_err(err)?;
            for (points, label, color) in [(train, "train", BLUE), (val, "validation", RED)] {
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the curves: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_panels() {
        let epochs: Vec<EpochStats> = (1..=3)
            .map(|i| EpochStats {
                epoch: i,
                train_loss: 1.0 / i as f64,
                train_accuracy: 0.3 + 0.1 * i as f64,
                val_loss: 1.1 / i as f64,
                val_accuracy: 0.3 + 0.05 * i as f64,
                samples_per_s: 10.0,
                seconds: 1.0,
            })
            .collect();
        let svg = curves_svg("gru", &epochs).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("gru loss") && svg.contains("gru accuracy"));
        assert!(svg.matches("<polyline").count() >= 4, "{svg}");
    }
}

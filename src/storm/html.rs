//! `--html FILE`: the report as one self-contained page: a summary table and SVG charts over time
//! (connects/s, connect latency percentiles, errors/s, backend connections) drawn with plotters'
//! SVG backend and inlined. No JavaScript, no stylesheet or font fetched: it opens offline.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::report::Report;

/// One line of a chart: its name, colour and (x, y) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

const COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(214, 39, 40)];

pub fn render(r: &Report) -> Result<String, String> {
    let secs = |f: &dyn Fn(&super::report::SecondReport) -> Option<f64>| -> Vec<(f64, f64)> {
        r.timeline.iter().filter_map(|s| f(s).map(|y| (s.second as f64, y))).collect()
    };
    let mut charts = vec![
        chart("Connects per second", "connects/s", &[("connects", COLOURS[0], secs(&|s| Some(s.connects as f64)))])?,
        chart(
            "Connect latency per second",
            "ms",
            &[
                ("p50", COLOURS[0], secs(&|s| s.connect_p50_ms)),
                ("p90", COLOURS[1], secs(&|s| s.connect_p90_ms)),
                ("p99", COLOURS[2], secs(&|s| s.connect_p99_ms)),
            ],
        )?,
        chart("Errors per second", "errors/s", &[("errors", COLOURS[2], secs(&|s| Some(s.errors as f64)))])?,
    ];
    if let Some(b) = &r.backends {
        let points = b.samples.iter().map(|&(t, n)| (t, n as f64)).collect();
        charts.push(chart(
            &format!("Backend connections ({}, max {})", b.source, b.max),
            "connections",
            &[("backends", COLOURS[0], points)],
        )?);
    }
    Ok(page(r, &charts))
}

fn page(r: &Report, charts: &[String]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pgmux storm</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}svg{{display:block;margin:1em 0}}</style>\n\
         </head><body>\n<h1>pgmux storm</h1>\n<p>{}</p>\n<table>\n",
        escape(&r.headline())
    );
    let lat = |l: &super::report::Latency| {
        format!("p50 {:.3} · p90 {:.3} · p99 {:.3} · max {:.3}", l.p50, l.p90, l.p99, l.max)
    };
    let mut rows = vec![
        ("elapsed", format!("{:.3} s", r.elapsed_s)),
        ("attempts", r.attempts.to_string()),
        ("succeeded", r.successes.to_string()),
        ("failed", r.failures.to_string()),
        ("connects", format!("{} ({:.1}/s)", r.connects, r.connects_per_s)),
        ("connect latency (ms)", lat(&r.connect_ms)),
        ("query latency (ms)", lat(&r.query_ms)),
    ];
    if let Some(b) = &r.backends {
        rows.push(("backend connections", format!("max {} (from {})", b.max, b.source)));
    }
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    h.push_str("</table>\n");
    if !r.errors.is_empty() {
        h.push_str(
            "<h2>Failures</h2>\n<table><tr><th>count</th><th>phase</th><th>SQLSTATE</th><th>message</th></tr>\n",
        );
        for e in &r.errors {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                e.count,
                e.phase,
                escape(e.sqlstate.as_deref().unwrap_or("—")),
                escape(&e.message)
            );
        }
        h.push_str("</table>\n");
    }
    for c in charts {
        h.push_str(c);
        h.push('\n');
    }
    h.push_str("</body></html>\n");
    h
}

/// One line chart as an inline `<svg>`.
fn chart(title: &str, y_desc: &str, series: &[Series]) -> Result<String, String> {
    let err = |e: DrawingAreaErrorKind<std::io::Error>| format!("chart {title}: {e}");
    let points = || series.iter().flat_map(|s| s.2.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        c.configure_mesh().x_desc("seconds").y_desc(y_desc).draw().map_err(err)?;
        for (name, colour, pts) in series {
            let colour = *colour;
            c.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        if series.len() > 1 {
            c.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    // Inline SVG in HTML needs no namespace declaration: drop it, the page then names no URL at all.
    Ok(svg
        .replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
        .replace(" xmlns:xlink=\"http://www.w3.org/1999/xlink\"", ""))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storm::record::{ErrorKey, Event, Phase, Recorder};
    use crate::storm::shape::{Plan, ShapeKind};

    #[test]
    fn the_page_is_self_contained() {
        let mut rec = Recorder::default();
        for i in 0..50u64 {
            let at = Duration::from_millis(i * 97);
            rec.record(Event::Connected { at, latency: Duration::from_micros(500 + i * 40) });
            rec.record(Event::Backends { at, count: i % 20 });
        }
        let error = ErrorKey { phase: Phase::Connect, sqlstate: Some("28P01".into()), message: "<bad> & \"x\"".into() };
        rec.record(Event::Failed { at: Duration::from_secs(2), error });
        let plan = Plan::new(ShapeKind::Rate, None, Some(10.0), Some(Duration::from_secs(5)), 1).unwrap();
        let r = Report::build(
            "app@h:1/app".into(),
            plan,
            "SELECT 1".into(),
            51,
            Duration::from_secs(5),
            &rec,
            Some("server"),
        );
        let html = render(&r).unwrap();
        for banned in ["http://", "https://", "<script", "<link", "@import", "src="] {
            assert!(!html.contains(banned), "page contains {banned:?}");
        }
        assert_eq!(html.matches("<svg").count(), 4, "four charts");
        assert!(html.contains("Connects per second") && html.contains("Backend connections"));
        assert!(html.contains("&lt;bad&gt; &amp; &quot;x&quot;") && !html.contains("<bad>"));
        assert!(html.contains("<polyline") || html.contains("<path"), "charts have lines");
    }
}

//! The features contract (docs/design.md, "Runtime data contract") on small frames whose values are
//! worked out by hand (or by the definitions, row by row).

use super::*;

fn raw(rows: &[(f64, f64, f64, f64, f64, f64, i8)]) -> DataFrame {
    let ts: Vec<i64> = (0..rows.len() as i64)
        .map(|i| 1_700_000_000_000_000 + i * 100_000)
        .collect();
    df!(
        "ts" => ts,
        "bid_price" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "ask_price" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "bid_size" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "ask_size" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        "trade_price" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        "trade_quantity" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        "side" => rows.iter().map(|r| r.6).collect::<Vec<_>>(),
    )
    .unwrap()
    .lazy()
    .with_column(col("ts").cast(DataType::Datetime(
        TimeUnit::Microseconds,
        Some(TimeZone::UTC),
    )))
    .collect()
    .unwrap()
}

fn names(df: &DataFrame) -> Vec<&str> {
    df.get_column_names().iter().map(|s| s.as_str()).collect()
}

fn f64s(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name)
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn i64s(df: &DataFrame, name: &str) -> Vec<i64> {
    df.column(name)
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

// bid, ask, bid_size, ask_size, trade_price, trade_quantity, side
const ROWS: [(f64, f64, f64, f64, f64, f64, i8); 6] = [
    (100.0, 100.2, 10.0, 20.0, 100.2, 5.0, 1),
    (100.1, 100.2, 12.0, 20.0, 100.2, 0.0, 0),
    (100.1, 100.3, 12.0, 8.0, 100.1, 3.0, -1),
    (100.0, 100.1, 7.0, 9.0, 100.1, 2.0, 1),
    (100.0, 100.1, 7.0, 9.0, 100.1, 0.0, 0),
    (100.2, 100.4, 5.0, 5.0, 100.4, 4.0, 1),
];

#[test]
fn each_feature_by_hand() {
    // Horizon 0 keeps every row, so the features of all six can be checked.
    let df = features_and_labels(
        raw(&ROWS),
        LabelParams {
            horizon: 0,
            threshold_bps: 1.0,
        },
    )
    .collect()
    .unwrap();
    assert_eq!(
        names(&df),
        [
            "ts",
            "ret_1",
            "spread",
            "obi",
            "ofi",
            "signed_volume",
            "ofi_sum",
            "tfi",
            "vol",
            "label"
        ]
    );
    let mid: [f64; 6] = [100.1, 100.15, 100.2, 100.05, 100.05, 100.3];
    let mut ret = vec![0.0];
    ret.extend(mid.windows(2).map(|w| (w[1] / w[0]).ln()));
    close(&f64s(&df, "ret_1"), &ret);
    let spread: Vec<f64> = ROWS.iter().zip(mid).map(|(r, m)| (r.1 - r.0) / m).collect();
    close(&f64s(&df, "spread"), &spread);
    close(
        &f64s(&df, "obi"),
        &[
            -10.0 / 30.0,
            -8.0 / 32.0,
            4.0 / 20.0,
            -2.0 / 16.0,
            -2.0 / 16.0,
            0.0,
        ],
    );
    // Row 1: bid up (+12), ask unchanged (-20 +20). Row 2: bid unchanged (+12 -12), ask up (+20).
    // Row 3: bid down (-12), ask down (-9). Row 4: unchanged (+7 -7 -9 +9). Row 5: both up (+5 +9).
    close(&f64s(&df, "ofi"), &[0.0, 12.0, 20.0, -21.0, 0.0, 14.0]);
    close(
        &f64s(&df, "signed_volume"),
        &[5.0, 0.0, -3.0, 2.0, 0.0, 4.0],
    );
    close(&f64s(&df, "ofi_sum"), &[0.0, 12.0, 32.0, 11.0, 11.0, 25.0]);
    close(
        &f64s(&df, "tfi"),
        &[1.0, 1.0, 2.0 / 8.0, 4.0 / 10.0, 4.0 / 10.0, 8.0 / 14.0],
    );
    let vol: Vec<f64> = (0..6)
        .map(|t| {
            let w = &ret[..=t];
            if w.len() < 2 {
                return 0.0;
            }
            let m = w.iter().sum::<f64>() / w.len() as f64;
            (w.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (w.len() - 1) as f64).sqrt()
        })
        .collect();
    let got = f64s(&df, "vol");
    for (g, v) in got.iter().zip(&vol) {
        assert!((g - v).abs() < 1e-12, "{got:?} vs {vol:?}");
    }
    assert_eq!(got[0], 0.0);
}

#[test]
fn rolling_window_is_100_rows_including_t() {
    // ofi is +1 on every row after the first (bid size 1 at a rising bid, ask unchanged at 0).
    let rows: Vec<_> = (0..150)
        .map(|i| (100.0 + i as f64 * 0.01, 200.0, 1.0, 0.0, 0.0, 0.0, 0i8))
        .collect();
    let df = features_and_labels(
        raw(&rows),
        LabelParams {
            horizon: 0,
            threshold_bps: 1.0,
        },
    )
    .collect()
    .unwrap();
    let ofi_sum = f64s(&df, "ofi_sum");
    assert_eq!(ofi_sum[0], 0.0);
    assert_eq!(ofi_sum[99], 99.0);
    assert_eq!(ofi_sum[100], 100.0);
    assert_eq!(ofi_sum[149], 100.0);
    // No trade anywhere: tfi is 0, not NaN.
    assert!(f64s(&df, "tfi").iter().all(|v| *v == 0.0));
}

#[test]
fn tfi_returns_to_exactly_zero_after_trades_leave_the_window() {
    let mut rows: Vec<_> = (0..3)
        .map(|_| (100.0, 100.1, 1.0, 1.0, 100.1, 0.1, 1i8))
        .collect();
    rows.extend((0..120).map(|_| (100.0, 100.1, 1.0, 1.0, 100.1, 0.0, 0i8)));
    let df = features_and_labels(
        raw(&rows),
        LabelParams {
            horizon: 0,
            threshold_bps: 1.0,
        },
    )
    .collect()
    .unwrap();
    let tfi = f64s(&df, "tfi");
    // Row 101's window (rows 2..=101) still holds a trade; row 102's (3..=102) none.
    assert_eq!(tfi[101], 1.0);
    assert_eq!(tfi[102], 0.0);
}

#[test]
fn labels_over_the_horizon_and_dropped_tail() {
    let df = features_and_labels(
        raw(&ROWS),
        LabelParams {
            horizon: 2,
            threshold_bps: 1.0,
        },
    )
    .collect()
    .unwrap();
    // mids 100.1 100.15 100.2 100.05 100.05 100.3: r0 = ln(100.2/100.1) > 1e-4, r1 and r2 < -1e-4,
    // r3 = ln(100.3/100.05) > 1e-4; rows 4 and 5 have no t+2.
    assert_eq!(i64s(&df, "label"), [2, 0, 0, 2]);
    // Rolling features are computed before the tail is dropped: identical on kept rows.
    let full = features_and_labels(
        raw(&ROWS),
        LabelParams {
            horizon: 0,
            threshold_bps: 1.0,
        },
    )
    .collect()
    .unwrap();
    assert_eq!(f64s(&df, "vol"), f64s(&full, "vol")[..4]);
}

#[test]
fn labels_at_plus_and_minus_theta_are_flat() {
    // Find mids for which r = ln(b/a) is exactly θ = (r·10⁴)/10⁴ and ln(a/b) exactly -θ.
    let a = 100.0;
    let (b, bps) = (1..10_000)
        .map(|k| a + k as f64 * 1e-4)
        .find_map(|b| {
            // As polars computes it: ln(x) / ln(e).
            let r = (b / a).log(std::f64::consts::E);
            let bps = r * 10_000.0;
            (bps / 10_000.0 == r && (a / b).log(std::f64::consts::E) == -r).then_some((b, bps))
        })
        .expect("a price pair with an exact threshold");
    // bid = ask = m, so the mid is m exactly.
    let row = |m: f64| (m, m, 1.0, 1.0, m, 0.0, 0i8);
    let rows = [row(a), row(b), row(a), row(a), row(b + 0.01), row(a - 0.01)];
    let df = features_and_labels(
        raw(&rows),
        LabelParams {
            horizon: 1,
            threshold_bps: bps,
        },
    )
    .collect()
    .unwrap();
    // r: +θ (flat), -θ (flat), 0 (flat), above θ (up), below -θ (down).
    assert_eq!(i64s(&df, "label"), [1, 1, 1, 2, 0]);
    let df = features_and_labels(
        raw(&rows),
        LabelParams {
            horizon: 1,
            threshold_bps: 0.0,
        },
    )
    .collect()
    .unwrap();
    assert_eq!(i64s(&df, "label"), [2, 0, 1, 2, 0]);
}

#[test]
fn tick_rule_side() {
    // Prices in quarters, so every mid is exact. Previous mids: -, 100.25, 100.375, 100.5, 100.125, 100.125.
    let rows = [
        (100.0, 100.5, 1.0, 1.0, 100.75, 1.0, 0i8), // first row: 0
        (100.25, 100.5, 1.0, 1.0, 100.5, 1.0, 0),   // above 100.25: 1
        (100.25, 100.75, 1.0, 1.0, 100.25, 1.0, 0), // below 100.375: -1
        (100.0, 100.25, 1.0, 1.0, 100.5, 1.0, 0),   // equal to 100.5: 0
        (100.0, 100.25, 1.0, 1.0, 101.0, 0.0, 0),   // no quantity: 0
        (100.5, 101.0, 1.0, 1.0, 100.0, 2.0, 0),    // below 100.125: -1
    ];
    let df = raw(&rows)
        .lazy()
        .drop(by_name(["side"], true, false))
        .with_column(super::tick_rule_side())
        .collect()
        .unwrap();
    let side: Vec<i8> = df
        .column("side")
        .unwrap()
        .i8()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(side, [0, 1, -1, 0, 0, -1]);
}

#[test]
fn split_boundaries_use_integer_arithmetic() {
    assert_eq!(
        split_sizes(100),
        SplitSizes {
            train: 70,
            validation: 15,
            test: 15
        }
    );
    assert_eq!(
        split_sizes(7),
        SplitSizes {
            train: 4,
            validation: 1,
            test: 2
        }
    );
    assert_eq!(
        split_sizes(1),
        SplitSizes {
            train: 0,
            validation: 0,
            test: 1
        }
    );
    // n = 90: 0.7·90 is 62.99999999999999 in floating point; ⌊70·90/100⌋ = 63.
    assert_eq!(split_sizes(90).train, 63);
    assert!((0.7f64 * 90.0).floor() < 63.0);
    for n in 0..2000 {
        let s = split_sizes(n);
        assert_eq!(
            (s.train, s.validation, s.train + s.validation + s.test),
            (70 * n / 100, 15 * n / 100, n)
        );
    }
}

fn labelled(n: usize, labels: &[i64]) -> DataFrame {
    let ts: Vec<i64> = (0..n as i64).collect();
    let mut df = df!("ts" => ts).unwrap();
    for (k, f) in FEATURES.iter().enumerate() {
        // Feature k: i·(k+1) for train-only statistics; "vol" is constant on train.
        let v: Vec<f64> = (0..n)
            .map(|i| {
                if *f == "vol" {
                    if i < 70 * n / 100 {
                        3.0
                    } else {
                        i as f64
                    }
                } else {
                    (i * (k + 1)) as f64
                }
            })
            .collect();
        df.with_column(Column::new((*f).into(), v)).unwrap();
    }
    df.with_column(Column::new("label".into(), labels.to_vec()))
        .unwrap();
    df
}

fn collected(split: &Split) -> DataFrame {
    split.frame.clone().collect().unwrap()
}

#[test]
fn scaler_fits_train_rows_only() {
    let n = 20; // train 14, validation 3, test 3
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let (scaler, splits) = split_and_scale(
        labelled(n, &labels),
        SplitParams {
            lookback: 1,
            undersample: false,
            seed: 42,
        },
    )
    .unwrap();
    // ret_1 on train = 0..13: mean 6.5, population variance (14²-1)/12.
    assert_eq!(scaler.features, FEATURES);
    assert!((scaler.mean[0] - 6.5).abs() < 1e-12);
    assert!((scaler.std[0] - ((196.0f64 - 1.0) / 12.0).sqrt()).abs() < 1e-12);
    assert!((scaler.mean[1] - 13.0).abs() < 1e-12);
    // Constant on train: std 0 → 1.
    assert_eq!((scaler.mean[7], scaler.std[7]), (3.0, 1.0));
    let rows: Vec<usize> = splits.iter().map(|s| s.rows).collect();
    assert_eq!(rows, [14, 3, 3]);
    // Applied to every split with the train statistics, stored as Float32.
    let test = collected(&splits[2]);
    assert!(FEATURES
        .iter()
        .all(|f| test.column(f).unwrap().dtype() == &DataType::Float32));
    let f32s = |name: &str| -> Vec<f64> {
        test.column(name)
            .unwrap()
            .f32()
            .unwrap()
            .into_no_null_iter()
            .map(f64::from)
            .collect()
    };
    let close_f32 = |a: &[f64], b: &[f64]| {
        assert!(
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs())),
            "{a:?} vs {b:?}"
        )
    };
    close_f32(
        &f32s("ret_1"),
        &[17.0, 18.0, 19.0].map(|x| (x - 6.5) / scaler.std[0]),
    );
    close_f32(&f32s("vol"), &[17.0, 18.0, 19.0].map(|x| x - 3.0));
    assert_eq!(names(&collected(&splits[0])), split_columns());
}

#[test]
fn sample_flags_per_split_without_undersampling() {
    let n = 100;
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let (_, splits) = split_and_scale(
        labelled(n, &labels),
        SplitParams {
            lookback: 5,
            undersample: false,
            seed: 42,
        },
    )
    .unwrap();
    for s in &splits {
        let flags: Vec<bool> = collected(s)
            .column("sample")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(flags.len(), s.rows);
        assert!(flags[..4].iter().all(|f| !f), "{}", s.name);
        assert!(flags[4..].iter().all(|f| *f), "{}", s.name);
        assert_eq!(s.sample_rows, s.rows - 4);
    }
    assert_eq!(
        splits[0].class_counts,
        BTreeMap::from([("0".into(), 24), ("1".into(), 23), ("2".into(), 23)])
    );
}

#[test]
fn undersampling_balances_train_flags_only() {
    let n = 200; // train 140
    let labels: Vec<i64> = (0..n as i64)
        .map(|i| {
            if i % 10 == 0 {
                0
            } else if i % 3 == 0 {
                2
            } else {
                1
            }
        })
        .collect();
    let params = SplitParams {
        lookback: 10,
        undersample: true,
        seed: 7,
    };
    let (_, splits) = split_and_scale(labelled(n, &labels), params).unwrap();
    let train = &splits[0];
    let train_frame = collected(train);
    let flags: Vec<bool> = train_frame
        .column("sample")
        .unwrap()
        .bool()
        .unwrap()
        .iter()
        .map(|b| b.unwrap())
        .collect();
    let tl = i64s(&train_frame, "label");
    assert_eq!(tl, labels[..140], "rows unchanged");
    assert!(
        flags[..9].iter().all(|f| !f),
        "only windowed rows can be sampled"
    );
    let eligible: Vec<i64> = tl[9..].to_vec();
    let m = (0..3)
        .map(|c| eligible.iter().filter(|l| **l == c).count())
        .min()
        .unwrap() as u64;
    assert!(m > 0);
    assert_eq!(
        train.sample_class_counts,
        BTreeMap::from([("0".into(), m), ("1".into(), m), ("2".into(), m)])
    );
    assert_eq!(train.sample_rows as u64, 3 * m);
    // Validation and test are untouched.
    for s in &splits[1..] {
        assert_eq!(s.sample_rows, s.rows - 9);
    }
    // Same seed, same choice; another seed, another.
    let (_, again) = split_and_scale(labelled(n, &labels), params).unwrap();
    assert!(collected(&again[0])
        .column("sample")
        .unwrap()
        .equals(train_frame.column("sample").unwrap()));
    let (_, other) =
        split_and_scale(labelled(n, &labels), SplitParams { seed: 8, ..params }).unwrap();
    assert!(!collected(&other[0])
        .column("sample")
        .unwrap()
        .equals(train_frame.column("sample").unwrap()));
}

#[test]
fn undersampling_with_a_missing_class_balances_the_present_ones() {
    let labels = [1, 1, 1, 2, 2, 1];
    let mut sample = vec![true; 6];
    undersample(&labels, &mut sample, 1);
    let kept: Vec<i64> = labels
        .iter()
        .zip(&sample)
        .filter(|(_, s)| **s)
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(kept.len(), 4);
    assert_eq!(kept.iter().filter(|l| **l == 2).count(), 2);
}

#[test]
fn timestamps_are_utc_in_parquet() {
    let mut df = raw(&ROWS);
    set_utc(&mut df, "ts").unwrap();
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    assert_eq!(df.column("ts").unwrap().dtype(), &utc);
    let path = tempfile::NamedTempFile::new().unwrap();
    ParquetWriter::new(path.reopen().unwrap())
        .finish(&mut df)
        .unwrap();
    let back = ParquetReader::new(std::fs::File::open(path.path()).unwrap())
        .finish()
        .unwrap();
    assert_eq!(back.column("ts").unwrap().dtype(), &utc);
}

#[test]
fn pieces_give_the_rows_and_labels_of_one_query() {
    // A random walk long enough for several pieces, with trades on some rows.
    let n = 5_000;
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let mut mid = 100.0;
    let rows: Vec<(f64, f64, f64, f64, f64, f64, i8)> = (0..n)
        .map(|i| {
            mid += 0.01 * next();
            let traded = i % 3 == 0;
            let side = if next() > 0.0 { 1 } else { -1 };
            (
                mid - 0.01,
                mid + 0.01,
                5.0 + next(),
                5.0 + next(),
                mid,
                if traded { 1.0 + next().abs() } else { 0.0 },
                if traded { side } else { 0 },
            )
        })
        .collect();
    let params = LabelParams {
        horizon: 7,
        threshold_bps: 0.5,
    };
    let whole = features_and_labels(raw(&rows), params).collect().unwrap();
    for piece_rows in [1000, 1234, n] {
        let pieced = labelled_in_pieces(raw(&rows), params, piece_rows).unwrap();
        assert_eq!(pieced.height(), n - 7);
        assert_eq!(names(&pieced), names(&whole));
        assert!(pieced
            .column("ts")
            .unwrap()
            .equals(whole.column("ts").unwrap()));
        assert_eq!(i64s(&pieced, "label"), i64s(&whole, "label"));
        for f in FEATURES {
            for (a, b) in f64s(&pieced, f).iter().zip(f64s(&whole, f)) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "{f} with pieces of {piece_rows}: {a} vs {b}"
                );
            }
        }
    }
}

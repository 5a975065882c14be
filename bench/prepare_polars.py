"""The data contract of docs/design.md in Python polars: the reference `runtime prepare` is
measured against.

Same input (hive-partitioned Parquet), same formulas, same outputs (train/validation/test
Parquet with zstd level 1 and Float32 features, scaler.json, preparation_config.json).
Undersampling draws with Python's random module, so its choice of rows differs from the Rust
one; everything else matches.
"""

import argparse
import datetime as dt
import glob
import json
import os
import random

import polars as pl

FEATURES = ["ret_1", "spread", "obi", "ofi", "signed_volume", "ofi_sum", "tfi", "vol"]
WINDOW = 100


def files_for(root, instrument, start, end):
    out = []
    for path in sorted(glob.glob(f"{root}/instrument={instrument}/date=*/*.parquet")):
        day = dt.date.fromisoformat(path.split("date=")[1].split("/")[0])
        if start <= day <= end:
            out.append(path)
    return out


def prepare(args, instrument):
    start, end = dt.date.fromisoformat(args.start_date), dt.date.fromisoformat(args.end_date)
    files = files_for(args.input, instrument, start, end)
    if not files:
        raise SystemExit(f"no raw ticks for instrument {instrument}")
    lo = dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    raw = (
        pl.scan_parquet(files)
        .select(
            pl.col("ts").dt.replace_time_zone("UTC") if args.naive_ts else pl.col("ts"),
            *[pl.col(c).cast(pl.Float64) for c in
              ["bid_price", "ask_price", "bid_size", "ask_size", "trade_price", "trade_quantity"]],
            pl.col("side").cast(pl.Int8),
        )
        .filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
        .sort("ts", maintain_order=True)
    )
    prev = lambda c: pl.col(c).shift(1)
    flag = lambda e: e.cast(pl.Float64)
    ofi = (
        flag(pl.col("bid_price") >= prev("bid_price")) * pl.col("bid_size")
        - flag(pl.col("bid_price") <= prev("bid_price")) * prev("bid_size")
        - flag(pl.col("ask_price") <= prev("ask_price")) * pl.col("ask_size")
        + flag(pl.col("ask_price") >= prev("ask_price")) * prev("ask_size")
    )
    theta = args.threshold_bps / 10_000.0
    r = (pl.col("future_mid") / pl.col("mid")).log()
    labelled = (
        raw.with_columns(((pl.col("bid_price") + pl.col("ask_price")) / 2).alias("mid"))
        .with_columns(
            (pl.col("mid") / prev("mid")).log().fill_null(0.0).alias("ret_1"),
            ((pl.col("ask_price") - pl.col("bid_price")) / pl.col("mid")).alias("spread"),
            ((pl.col("bid_size") - pl.col("ask_size")) / (pl.col("bid_size") + pl.col("ask_size"))).alias("obi"),
            ofi.fill_null(0.0).alias("ofi"),
            (pl.col("side").cast(pl.Float64) * pl.col("trade_quantity")).alias("signed_volume"),
            flag(pl.col("trade_quantity") != 0).alias("trade_events"),
            pl.col("mid").shift(-args.horizon).alias("future_mid"),
        )
        .with_columns(
            pl.col("ofi").rolling_sum(WINDOW, min_samples=1).alias("ofi_sum"),
            pl.when(pl.col("trade_events").rolling_sum(WINDOW, min_samples=1) == 0)
            .then(0.0)
            .otherwise(pl.col("signed_volume").rolling_sum(WINDOW, min_samples=1)
                       / pl.col("trade_quantity").rolling_sum(WINDOW, min_samples=1))
            .alias("tfi"),
            pl.col("ret_1").rolling_std(WINDOW, min_samples=2, ddof=1).fill_null(0.0).alias("vol"),
        )
        .filter(pl.col("future_mid").is_not_null())
        .with_columns(pl.when(r < -theta).then(0).when(r > theta).then(2).otherwise(1).cast(pl.Int64).alias("label"))
        .select("ts", *FEATURES, "label")
        .collect()
    )
    n = labelled.height
    n_train, n_val = 70 * n // 100, 15 * n // 100
    train = labelled.slice(0, n_train)
    mean = [train[f].mean() for f in FEATURES]
    std = [train[f].std(ddof=0) for f in FEATURES]
    std = [1.0 if s == 0 or s is None else s for s in std]
    # Float32 features, as `runtime prepare` writes them (the contract allows Float64 or Float32).
    scaled = labelled.with_columns([((pl.col(f) - m) / s).cast(pl.Float32).alias(f) for f, m, s in zip(FEATURES, mean, std)])
    out = os.path.join(args.output, f"datasets/instrument={instrument}/start_date={start}/end_date={end}")
    os.makedirs(out, exist_ok=True)
    splits = {}
    offset = 0
    for name, length in [("train", n_train), ("validation", n_val), ("test", n - n_train - n_val)]:
        part = scaled.slice(offset, length)
        offset += length
        sample = [i >= args.lookback - 1 for i in range(length)]
        labels = part["label"].to_list()
        if name == "train" and args.undersample:
            by_class = {}
            for i, (l, s) in enumerate(zip(labels, sample)):
                if s:
                    by_class.setdefault(l, []).append(i)
            m = min(len(v) for v in by_class.values())
            rng = random.Random(args.seed)
            for rows in by_class.values():
                rng.shuffle(rows)
                for i in rows[m:]:
                    sample[i] = False
        part = part.with_columns(pl.Series("sample", sample))
        part.write_parquet(os.path.join(out, f"{name}.parquet"), compression="zstd", compression_level=1)
        splits[name] = {"rows": length, "class_counts": {str(c): labels.count(c) for c in range(3)}}
    with open(os.path.join(out, "scaler.json"), "w") as f:
        json.dump({"features": FEATURES, "mean": mean, "std": std}, f)
    with open(os.path.join(out, "preparation_config.json"), "w") as f:
        json.dump({"instrument_id": instrument, "input": args.input, "lookback": args.lookback,
                   "horizon": args.horizon, "threshold_bps": args.threshold_bps,
                   "undersample": args.undersample, "seed": args.seed, "rows": n, "splits": splits}, f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--instrument", required=True)
    p.add_argument("--start-date", required=True)
    p.add_argument("--end-date", required=True)
    p.add_argument("--lookback", type=int, default=128)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--threshold-bps", type=float, default=1.0)
    p.add_argument("--undersample", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--naive-ts", action="store_true", help="input timestamps carry no time zone")
    args = p.parse_args()
    for instrument in [int(i) for i in args.instrument.split(",")]:
        prepare(args, instrument)


if __name__ == "__main__":
    main()

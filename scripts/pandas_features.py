"""Reference: the features computed the pandas way, per coin, as the Training
Service does. Used to cross-check our Polars engine and as the benchmark's
baseline; never used by the service itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _ath_block(g: pd.DataFrame) -> pd.DataFrame:
    g = g.copy()
    g["rolling_ath"] = g["price_high"].cummax()
    ath = g["rolling_ath"]
    g["ath_distance_pct"] = ((ath - g["price_close"]) / ath * 100).where(ath != 0)
    prev = ath.shift(1)
    g["ath_breakout"] = (g["price_high"] > prev).astype(int)
    ts = pd.to_datetime(g["timestamp"], utc=True)
    if g["ath_breakout"].sum() == 0:
        minutes = (ts - ts.iloc[0]).dt.total_seconds() / 60
    else:
        last_breakout = ts.where(g["ath_breakout"] == 1).ffill()
        minutes = (ts - last_breakout).dt.total_seconds() / 60
    g["minutes_since_ath"] = minutes
    g["ath_age_hours"] = minutes / 60
    g["ath_is_recent"] = (minutes < 60).astype(int)
    g["ath_is_old"] = (minutes > 1440).astype(int)
    for col in ("minutes_since_ath", "ath_age_hours", "ath_distance_pct"):
        g[col] = g[col].fillna(0)
    return g


def _engineered(g: pd.DataFrame, windows: Sequence[int]) -> pd.DataFrame:
    out: dict[str, pd.Series] = {}
    dev = g["dev_sold_amount"].fillna(0)
    out["dev_sold_flag"] = (dev > 0).astype(int)
    out["dev_sold_cumsum"] = dev.cumsum()
    for w in windows:
        out[f"dev_sold_spike_{w}"] = (dev.rolling(w, min_periods=1).sum() > 0).astype(int)
    bp = g["buy_pressure_ratio"].fillna(0)
    for w in windows:
        ma = bp.rolling(w, min_periods=1).mean()
        out[f"buy_pressure_ma_{w}"] = ma
        out[f"buy_pressure_trend_{w}"] = bp - ma
    wb = g["whale_buy_volume_sol"].fillna(0)
    ws = g["whale_sell_volume_sol"].fillna(0)
    out["whale_net_volume"] = wb - ws
    for w in windows:
        out[f"whale_activity_{w}"] = (
            wb.rolling(w, min_periods=1).sum() + ws.rolling(w, min_periods=1).sum()
        )
    vol = g["volatility_pct"]
    for w in windows:
        ma = vol.rolling(w, min_periods=1).mean()
        out[f"volatility_ma_{w}"] = ma
        out[f"volatility_spike_{w}"] = (vol > 1.5 * ma).astype(int)
    for w in windows:
        out[f"wash_trading_flag_{w}"] = (
            g["unique_signer_ratio"].rolling(w, min_periods=1).mean() < 0.15
        ).astype(int)
    net = g["net_volume_sol"]
    flip = (net > 0).astype(int).diff().abs()
    for w in windows:
        out[f"net_volume_ma_{w}"] = net.rolling(w, min_periods=1).mean()
        out[f"volume_flip_{w}"] = flip
    close = g["price_close"]
    for w in windows:
        filled = close.ffill()
        out[f"price_change_{w}"] = (filled / filled.shift(w) - 1) * 100
        old = close.shift(w)
        out[f"price_roc_{w}"] = ((close - old) / old * 100).where(old != 0)
    volume = g["volume_sol"]
    for w in windows:
        mean = volume.rolling(w, min_periods=1).mean()
        std = volume.rolling(w, min_periods=1).std()
        out[f"volume_ratio_{w}"] = (volume / mean).where(mean != 0)
        out[f"volume_spike_{w}"] = ((volume - mean) / std).where(std != 0)
    mcap = g["market_cap_close"]
    for w in windows:
        old = mcap.shift(w)
        out[f"mcap_velocity_{w}"] = ((mcap - old) / old * 100).where(old != 0)
    for w in windows:
        trend = g["ath_distance_pct"].rolling(w, min_periods=1).mean()
        out[f"ath_distance_trend_{w}"] = trend
        out[f"ath_approach_{w}"] = (trend.diff() < 0).astype(int)
        out[f"ath_breakout_count_{w}"] = g["ath_breakout"].rolling(w, min_periods=1).sum()
        out[f"ath_breakout_volume_ma_{w}"] = (
            (g["ath_breakout"] * volume).rolling(w, min_periods=1).mean()
        )
    for w in windows:
        out[f"ath_age_trend_{w}"] = g["minutes_since_ath"].rolling(w, min_periods=1).mean()
    return pd.concat([g, pd.DataFrame(out, index=g.index)], axis=1)


def compute_pandas(frame: pd.DataFrame, windows: Sequence[int] = (5, 10, 15)) -> pd.DataFrame:
    """All engineered columns, computed one coin at a time."""
    parts = []
    frame = frame.sort_values(["mint", "timestamp"], kind="stable")
    for _, g in frame.groupby("mint", sort=True):
        g = _ath_block(g.reset_index(drop=True))
        parts.append(_engineered(g, windows))
    result = pd.concat(parts, ignore_index=True)
    numeric = result.select_dtypes(include=[np.number]).columns
    result[numeric] = result[numeric].replace([np.inf, -np.inf], np.nan).fillna(0)
    return result

"""The naive tutorial baseline: FastAPI + pydantic + pandas + scikit-learn, as most blog posts write it.

Runs in the bench environment: `uvicorn benchmarks.naive:app`, with BENCH_PIPELINE naming the joblib file.
"""

# FastAPI lives in the bench venv only: seen from the main venv its decorators are untyped.
# mypy: disable-error-code="untyped-decorator"
from __future__ import annotations

import os

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["BENCH_PIPELINE"])
app = FastAPI(title="Boston housing (naive)")


class House(BaseModel):
    CRIM: float
    ZN: float
    INDUS: float
    CHAS: float
    NOX: float
    RM: float
    AGE: float
    DIS: float
    RAD: float
    TAX: float
    PTRATIO: float
    B: float
    LSTAT: float


class Houses(BaseModel):
    instances: list[House]


@app.post("/predict")
def predict(house: House) -> dict[str, float]:
    frame = pd.DataFrame([house.model_dump()])
    return {"prediction": float(model.predict(frame.to_numpy())[0])}


@app.post("/predict/batch")
def predict_batch(houses: Houses) -> dict[str, list[float]]:
    frame = pd.DataFrame([house.model_dump() for house in houses.instances])
    return {"predictions": model.predict(frame.to_numpy()).tolist()}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}

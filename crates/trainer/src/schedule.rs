//! Learning-rate schedules with linear warmup, as transformers' `get_*_schedule_with_warmup`.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Flat at the peak.
    Constant,
    /// Linear decay to 0 at the last step.
    Linear,
    /// Half a cosine down to 0 at the last step.
    Cosine,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            other => Err(format!(
                "unknown schedule `{other}`; expected constant, linear or cosine"
            )),
        }
    }
}

/// A schedule over `total_steps` optimizer steps with `warmup_steps` of linear warmup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// After warmup.
    pub kind: ScheduleKind,
    /// Steps of linear warmup from 0.
    pub warmup_steps: u64,
    /// Steps in the run.
    pub total_steps: u64,
}

impl Schedule {
    /// The multiplier of the peak learning rate for the update at `step` (0-based: the first
    /// update uses step 0, as transformers' `LambdaLR` does).
    pub fn factor(&self, step: u64) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        let progress = (s - w) / (t - w).max(1.0);
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            ScheduleKind::Cosine => {
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_transformers_lambdas() {
        // get_linear_schedule_with_warmup(num_warmup_steps=2, num_training_steps=10).
        let s = Schedule {
            kind: ScheduleKind::Linear,
            warmup_steps: 2,
            total_steps: 10,
        };
        let got: Vec<f64> = (0..10).map(|i| s.factor(i)).collect();
        let want = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        // get_cosine_schedule_with_warmup(2, 10): 0.5 * (1 + cos(pi * (s - 2) / 8)).
        let c = Schedule {
            kind: ScheduleKind::Cosine,
            ..s
        };
        assert!((c.factor(6) - 0.5).abs() < 1e-12);
        assert!((c.factor(4) - 0.853_553_390_593_273_8).abs() < 1e-12);
        let k = Schedule {
            kind: ScheduleKind::Constant,
            ..s
        };
        assert_eq!(k.factor(1), 0.5);
        assert_eq!(k.factor(9), 1.0);
    }
}

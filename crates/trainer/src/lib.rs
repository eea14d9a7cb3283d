//! `trainer`: fine-tuning Llama models on burn — full, LoRA and QLoRA — with one loop generic
//! over `B: AutodiffBackend` (burn-flex / burn-ndarray on CPU, burn-cuda on GPU).
//!
//! - [`AdamW`]: PyTorch's AdamW, state by parameter name (saved and resumed bit for bit).
//! - [`Schedule`]: constant / linear / cosine with linear warmup (transformers' lambdas).
//! - [`NamedGrads`]: gradients accumulated over micro-batches and clipped by their global norm
//!   (`torch.nn.utils.clip_grad_norm_`).
//! - [`causal_lm_loss`]: transformers' loss (labels -100 ignored, divided by the tokens of the
//!   whole accumulated batch); [`loss_and_grads`] computes it a chunk of positions at a time
//!   with its gradient written out, never holding the `[batch, seq, vocab]` logits.

pub mod batch;
pub mod card;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod estimate;
pub mod files;
pub mod grads;
pub mod loss;
pub mod oom;
pub mod optim;
pub mod plot;
pub mod report;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod setup;
pub mod step;
pub mod tensorboard;

pub use batch::{BatchTensors, batch_tensors, labels_tensor};
pub use checkpoint::TrainerState;
pub use config::{
    ComputeDtype, DataFormat, Device, LoraSection, Method, OnNonFinite, QuantSection, QuantType,
    ReportTo, TrainConfig,
};
pub use error::{Error, Result};
pub use estimate::{Estimate, EstimateInput, estimate};
pub use files::write_atomic;
pub use grads::NamedGrads;
pub use loss::{
    IGNORE_INDEX, causal_lm_loss, count_targets, default_chunk_rows, head_loss, loss_and_grads,
    summed_lm_loss,
};
pub use optim::{AdamW, AdamWConfig};
pub use report::{Metric, Summary};
pub use run::{Observer, Quiet, RunPaths, evaluate, run, sample};
pub use schedule::{Schedule, ScheduleKind};
pub use step::{StepOptions, StepStats, checkpointed_backward, train_step};

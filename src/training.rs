//! Training and fine-tuning as the official code does it (official `baddiffusion.py`, `train_loop`): Adam, the cosine schedule
//! with warm-up, gradient accumulation to the effective batch, gradient clipping at 1.0.
pub mod adam;
pub mod grad_scaler;
pub mod lr_schedule;
pub mod trainer;
pub mod update;

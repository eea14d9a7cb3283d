//! Precision and memory of each weight format on Gaussian weights (a 4096 x 4096 matrix,
//! std 0.02, fixed seed): bits per parameter, MSE, max |error| and SNR after a round trip.
//!
//! `cargo bench -p benches --bench quant_precision` prints a markdown table (values, not timings;
//! the codecs are bit-identical to bitsandbytes, see crates/quant/tests/codecs.rs).

use quant::{
    Absmax, ErrorStats, QuantType, dequantize_4bit, int8_vectorwise_dequant, int8_vectorwise_quant,
    quantize_4bit,
};

/// Deterministic N(0, std) samples (xorshift + Box-Muller), so the table is reproducible.
fn gaussian(n: usize, std: f32, mut seed: u64) -> Vec<f32> {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
        })
        .collect()
}

struct Row {
    name: &'static str,
    bits: f64,
    recon: Vec<f32>,
}

fn main() {
    let (rows, cols) = (4096usize, 4096usize);
    let n = rows * cols;
    let w = gaussian(n, 0.02, 0x5eed);
    let mut table = vec![
        Row {
            name: "f32",
            bits: 32.0,
            recon: w.clone(),
        },
        Row {
            name: "bf16",
            bits: 16.0,
            recon: w
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect(),
        },
        Row {
            name: "f16",
            bits: 16.0,
            recon: w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        },
    ];
    let q8 = int8_vectorwise_quant(&w, rows, cols, 0.0).expect("finite weights");
    table.push(Row {
        name: "int8 (row-wise, SCB)",
        bits: 8.0 + 32.0 / cols as f64,
        recon: int8_vectorwise_dequant(&q8),
    });
    for (name, qt, dq) in [
        ("fp4 (blocks of 64)", QuantType::Fp4, false),
        ("nf4 (blocks of 64)", QuantType::Nf4, false),
        ("nf4 + double quant", QuantType::Nf4, true),
    ] {
        let q = quantize_4bit(&w, qt, 64, dq).expect("finite weights");
        let extra_bytes = match &q.absmax {
            Absmax::F32(a) => 4 * a.len(),
            Absmax::Nested(nq) => nq.codes.len() + 4 * nq.scales.len() + 4,
        };
        let bits = 8.0 * (q.packed.len() + extra_bytes) as f64 / n as f64;
        table.push(Row {
            name,
            bits,
            recon: dequantize_4bit(&q).expect("consistent"),
        });
    }
    println!("weights: {rows} x {cols}, N(0, 0.02), seed 0x5eed\n");
    println!("| format | bits/param | MSE | max abs error | SNR (dB) |");
    println!("|---|---|---|---|---|");
    for r in &table {
        let stats = ErrorStats::between(&w, &r.recon);
        let (mse, max, snr) = (stats.mse(), stats.max_abs, stats.snr_db());
        println!(
            "| {} | {:.3} | {:.3e} | {:.3e} | {:.1} |",
            r.name, r.bits, mse, max, snr
        );
    }
}

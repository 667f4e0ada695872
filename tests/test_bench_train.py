"""`chorus bench train --quick`: the figures the issue asks for, per model, from the real loop."""

from __future__ import annotations

from conftest import bench_figures


def test_quick_train_benchmark_prints_throughput_and_loader_share(tmp_path):
    figures = bench_figures("train", tmp_path, timeout=300)
    assert figures["device"] in ("cpu", "cuda") and figures["input_shape"] == [3, 128, 128]
    assert set(figures["models"]) == {"paper_cnn", "short_chunk"} and figures["repeats"] == 1
    for model in figures["models"].values():
        assert model["samples_per_s"] > 0 and model["fp32_samples_per_s"] > 0
        assert 0.0 <= model["loader_share"] < 1.0
        # the step's work against the machine: counted FLOPs over time, a share of the measured peak
        assert model["gflop_per_sample"] > 0 and model["gflops"] > 0 and 0 < model["fp32_share_of_peak"] < 2
        assert 0.0 <= model["system_cpu_share"] <= 1.0 and model["minor_faults_per_step"] >= 0
    assert figures["peak_gflops"]["fp32"] > 0 and figures["cpu"]
    if figures["device"] == "cpu":  # scoring in batches of 256 against the CPU's inference batch
        inference = figures["inference"]
        assert set(inference) == {"batch_256", "batch_32", "segments"} and inference["segments"] == 128
        assert all(inference[b]["seconds"] > 0 and inference[b]["minor_faults"] >= 0 for b in ("batch_256", "batch_32"))
    assert figures["max_loader_share"] == max(m["loader_share"] for m in figures["models"].values())
    # a network short of the 2x target, or of 40% of the fp32 peak, says where its step's time goes
    assert figures["targets"] == {"speedup_vs_fp32": 2.0, "fp32_share_of_peak": 0.4}
    assert figures["below_fp32_peak_share"] == sorted(n for n, m in figures["models"].items()
                                                      if m["fp32_share_of_peak"] < 0.4)
    for name, model in figures["models"].items():
        below = (figures["precision"] != "fp32" and model["speedup_vs_fp32"] < 2.0) or name in figures["below_fp32_peak_share"]
        assert ("why_below_target" in model) == below
        if below:
            why = model["why_below_target"]
            assert why["fp32_ms_per_step"]["convolution"] > 0 and set(why["faster_by_part"]) <= set(why["fp32_ms_per_step"])
            assert 0.0 <= why["fp32_share_not_sped_up"] <= 1.0 and len(why["heaviest_fp32_operators"]) == 5
            assert 0.0 <= why["fp32_share_without_arithmetic"] <= 1.0

"""The benchmark machinery behind BENCHMARKS.md, run from the repository root as `python -m recipes.benchmarks.<name>`.

- `benchmark`: label tokens against their peers on the benchmark datasets (quality, size, speed, memory).
- `benchmark_scaling`: train-step time against the number of labels.
- `benchmark_memory`: peak memory on 4-bit, 8-bit and bf16/fp32 backbones against PEFT QLoRA.
- `benchmark_adapters`: adapter size, switch and load times.
- `make_benchmarks_md`: renders BENCHMARKS.md and its plots from the result files (and can run the presets).
- `benchmark_common`, `benchmark_measure`, `benchmark_methods`: what those share; `wordnet`, `wordnet_db`: the
  WordNet datasets.
"""

"""Speed tools: how fast the model and its input pipeline run, and where the time goes (docs/speed.md).

The core modules (config, data, model, layers, optim, training, checkpoint, distribute, ...) never
import this package; the command line, the ablation's time estimate and these tools do.

  benchmark        images/s of the training input pipeline alone, of the training step alone (batch
                   in memory) and of training fed by the pipeline: is the pipeline the bottleneck?
                   `python -m alexnet_tf benchmark [--config PATH] [--fake-images N] [--pipeline-only]`
  speed            training and inference images/s of the paper and default models on in-memory
                   synthetic data, forward multiply-adds, FLOP/s and utilisation against a matmul of the
                   same dtype timed in the same run, and the speed goals met or not
                   `python -m alexnet_tf speed [--models paper,default] [--precisions ...] [--repeats N] [--torch] [--json]`
  benchmark_command, speed_command   those two commands' arguments and handlers, which import the
                   measuring modules (and so TensorFlow) only when the command runs
  speed_torch      the same network in PyTorch, timed by `speed --torch` (optional dependency:
                   `pip install -r alexnet_tf/perf/requirements-torch.txt`)
  profile          op time of a profiler trace (train.profile_steps) by op type and by layer and direction
                   `python -m alexnet_tf profile --run-dir DIR [--top N]`
  where_time_goes  training step time of the model with one thing changed at a time (LRN variants, no LRN,
                   XLA, conv channels padded to the CPU's block, mixed_bfloat16, oneDNN start-up settings in
                   fresh processes), timed in interleaved rounds, as ratios to the shipped version
                   `python -m alexnet_tf.perf.where_time_goes [--model default|paper] [--steps 8] [--repeats 2]`
  conv_padding     Conv2D layers that run on channel counts padded to a block and slice the padding off
                   (same weights and outputs), for where_time_goes
  spread           best-of and spread of repeated timings, and the utilisation-above-100 % flag (no TensorFlow)
  bench_distribute step time of each distribution strategy, each in a fresh process, and the cost of a
                   recovery checkpoint (docs/distribute.md, "What each mode costs")
                   `python -m alexnet_tf.perf.bench_distribute [--config PATH] [--steps 10] [--checkpoint]`
"""

"""The churn network: Conv1D blocks over time, then a GRU/LSTM, joined with a dense branch over static features.

Convolutions pick up short local patterns (a week with carts but no order, a burst of searches); the recurrent
layer reads how they evolve across the T buckets (engagement fading week by week); the static branch adds tenure,
recency and lifetime value. The output is an uncalibrated churn probability (calibration is fitted afterwards).
"""

from __future__ import annotations

import os


def quiet_tensorflow(threads: int | None = None):
    """Import TF with its C++ logging off; optionally pin its thread pools (one rank per core)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process
            pass
    return tf


def build_model(
    n_buckets: int,
    n_channels: int,
    n_static: int,
    *,
    conv_filters: int = 32,
    conv_kernel: int = 3,
    conv_blocks: int = 2,
    rnn: str = "gru",
    rnn_units: int = 32,
    dense_units: int = 16,
    dropout: float = 0.1,
    seed: int = 7,
    n_long: int = 0,
):
    tf = quiet_tensorflow()
    L = tf.keras.layers
    init = tf.keras.initializers.GlorotUniform(seed=seed)
    seq_in = tf.keras.Input((n_buckets, n_channels), name="sequence")
    static_in = tf.keras.Input((n_static,), name="static")
    x = seq_in
    for i in range(conv_blocks):
        x = L.Conv1D(
            conv_filters, conv_kernel, padding="causal", activation="relu", kernel_initializer=init, name=f"conv{i}"
        )(x)
    rnn_layer = {"gru": L.GRU, "lstm": L.LSTM}[rnn]  # default activations, no recurrent dropout: cuDNN kernels on GPU
    x = rnn_layer(
        rnn_units, kernel_initializer=init, recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed), name=rnn
    )(x)
    s = L.Dense(dense_units, activation="relu", kernel_initializer=init, name="static_dense")(static_in)
    inputs, parts = [seq_in, static_in], [x, s]
    if n_long:  # the coarse multi-year view (months): a small recurrent layer of its own reads tenure and rhythm
        long_in = tf.keras.Input((n_long, n_channels), name="long_sequence")
        ortho = tf.keras.initializers.Orthogonal(seed=seed)
        long_rnn = rnn_layer(max(rnn_units // 2, 4), kernel_initializer=init, recurrent_initializer=ortho, name="long")
        inputs.append(long_in)
        parts.append(long_rnn(long_in))
    h = L.Concatenate(name="join")(parts)
    h = L.Dense(dense_units, activation="relu", kernel_initializer=init, name="head")(h)
    h = L.Dropout(dropout, seed=seed)(h)
    # float32 output even under a mixed-precision policy: a float16 sigmoid saturates and the loss loses precision
    out = L.Dense(1, activation="sigmoid", kernel_initializer=init, name="churn", dtype="float32")(h)
    return tf.keras.Model(inputs, out, name="churn_cnn_rnn")


def model_from_config(training_cfg, n_buckets: int, n_channels: int, n_static: int, n_long: int = 0):
    t = training_cfg
    return build_model(
        n_buckets,
        n_channels,
        n_static,
        conv_filters=t["conv_filters"],
        conv_kernel=t["conv_kernel"],
        conv_blocks=t["conv_blocks"],
        rnn=t["rnn"],
        rnn_units=t["rnn_units"],
        dense_units=t["dense_units"],
        dropout=t["dropout"],
        seed=t["seed"],
        n_long=n_long,
    )

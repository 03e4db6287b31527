"""Resume restores the optimizer too: Adam's moments and its step counter (which drives the LR warm-up)."""

import numpy as np


def _model_and_opt(schedule):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2), tf.keras.layers.Dense(1)])
    opt = tf.keras.optimizers.Adam(learning_rate=schedule)
    model.compile(optimizer=opt, loss="mse")
    return model, opt


def test_optimizer_state_survives_a_restart(tmp_path):
    from churn_spark.distributed import WarmupSchedule, restore_optimizer, save_optimizer

    x, y = np.random.default_rng(0).normal(size=(64, 3)), np.ones((64, 1))
    model, opt = _model_and_opt(WarmupSchedule(0.001, 0.004, 100))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    save_optimizer(opt, tmp_path, 0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    name = save_optimizer(opt, tmp_path, 1)
    assert not list(tmp_path.glob("optimizer-0*"))  # only the newest epoch's files stay
    model.save_weights(str(tmp_path / "w.h5"))
    moments = [v.numpy() for v in opt.variables]  # iterations, then m and v per weight (layer names differ)

    fresh, fresh_opt = _model_and_opt(WarmupSchedule(0.001, 0.004, 100))
    fresh.load_weights(str(tmp_path / "w.h5"))
    assert restore_optimizer(fresh_opt, fresh, tmp_path, name) == 16  # 2 epochs x 8 steps
    restored = [v.numpy() for v in fresh_opt.variables]
    assert len(restored) == len(moments) == 1 + 2 * 4
    assert all(np.array_equal(a, b) for a, b in zip(restored, moments))
    # the warm-up continues where it stopped instead of starting again
    assert float(fresh_opt.learning_rate) == float(opt.learning_rate) > 0.001

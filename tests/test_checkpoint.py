"""Resume restores the optimizer too: Adam's moments, its step counter and the learning rate the warm-up set."""

import numpy as np


def _model_and_opt():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2), tf.keras.layers.Dense(1)])
    opt = tf.keras.optimizers.Adam(learning_rate=0.004)
    model.compile(optimizer=opt, loss="mse")
    return model, opt


def test_optimizer_state_survives_a_restart(tmp_path):
    from churn_spark.distributed import restore_optimizer, save_optimizer

    x, y = np.random.default_rng(0).normal(size=(64, 3)), np.ones((64, 1))
    model, opt = _model_and_opt()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    save_optimizer(opt, tmp_path, 0)
    opt.learning_rate.assign(0.0025)  # what Horovod's warm-up callback does batch by batch
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    name = save_optimizer(opt, tmp_path, 1)
    assert not list(tmp_path.glob("optimizer-0*"))  # only the newest epoch's files stay
    model.save_weights(str(tmp_path / "w.h5"))
    moments = [v.numpy() for v in opt.variables]  # iterations, then m and v per weight (layer names differ)

    fresh, fresh_opt = _model_and_opt()
    fresh.load_weights(str(tmp_path / "w.h5"))
    assert restore_optimizer(fresh_opt, fresh, tmp_path, name) == 16  # 2 epochs x 8 steps
    restored = [v.numpy() for v in fresh_opt.variables]
    assert len(restored) == len(moments) == 1 + 2 * 4
    assert all(np.array_equal(a, b) for a, b in zip(restored, moments))
    assert float(fresh_opt.learning_rate) == np.float32(0.0025)  # not the 0.004 it was built with


def test_early_stopping_state_survives_a_restart(tmp_path):
    """The stock EarlyStopping forgets its best epoch on a restart; the resumable one reloads it."""
    import json

    from churn_spark.distributed import ResumableEarlyStopping

    model, _ = _model_and_opt()
    model.save_weights(str(tmp_path / "best.h5"))
    best_weights = model.get_weights()
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 3, "best": 0.25, "wait": 2, "stopped": False}))
    x, y = np.random.default_rng(0).normal(size=(64, 3)), np.ones((64, 1))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # the weights move on after the best epoch
    es = ResumableEarlyStopping(patience=3, ckpt=tmp_path)
    es.set_model(model)
    es.on_train_begin()
    assert (es.best, es.wait) == (0.25, 2)
    es.on_epoch_end(4, {"val_loss": 0.5})  # no improvement: the third epoch without one stops training
    assert model.stop_training and not es.improved
    es.restore(model)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), best_weights))
    es2 = ResumableEarlyStopping(patience=3, ckpt=None)
    es2.set_model(model)
    es2.on_train_begin()
    es2.on_epoch_end(0, {"val_loss": 0.5})
    assert es2.improved and es2.best == 0.5 and es2.wait == 0

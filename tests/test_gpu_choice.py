"""Which GPU a Horovod rank takes: the one Spark assigned to its task, else its local rank; CPU path unchanged."""

import pytest

from churn_spark.distributed import assigned_gpus, gpu_choice, pin_device

FOUR = [f"/physical_device:GPU:{i}" for i in range(4)]


def test_the_gpu_spark_assigned_to_the_task_wins():
    assert gpu_choice(["2"], local_rank=0, visible=FOUR) == 2
    assert gpu_choice(["3"], local_rank=1, visible=FOUR) == 3  # not local rank 1
    assert gpu_choice(["1", "3"], local_rank=0, visible=FOUR) == 1  # a task with two: the first


def test_two_ranks_on_one_executor_do_not_share_gpu_0_without_gpu_scheduling():
    assert [gpu_choice([], r, FOUR) for r in range(4)] == [0, 1, 2, 3]
    assert [gpu_choice([], r, FOUR[:2]) for r in range(4)] == [0, 1, 0, 1]


def test_no_gpu_means_cpu_and_an_impossible_assignment_is_an_error():
    assert gpu_choice([], 0, []) is None and gpu_choice(["0"], 0, []) is None
    with pytest.raises(RuntimeError, match="assigned GPU"):
        gpu_choice(["7"], 0, FOUR)


def test_cpu_machine_keeps_the_cpu_path():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert assigned_gpus() == []  # outside a Horovod-on-Spark task nothing is assigned
    assert pin_device(tf, local_rank=1, mixed_precision=True) == "cpu"
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # mixed precision only on a GPU

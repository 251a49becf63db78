"""A local Spark application in two phases, for tests/spark_real.rs.

Job group "io" writes MIB MiB of text and reads it back (two jobs); job
group "cpu" burns CPU in SHA-256 loops (two jobs, the second submitted only
when told: the group's total of jobs grows while the operator watches).
Between steps it waits for a file of the test's, so the test can compare
the node's rows with Spark's own REST answers while nothing changes:

  io-done   written after the I/O phase; waits for go-cpu
  cpu-one   written after the first CPU job; waits for go-cpu2
  wait-N    written by each task of the second CPU job, which then waits
            for go-finish (the job stays running, its tasks all active)
  cpu-done  written after the CPU phase; waits for go-end, then stops
            (the driver's UI goes away with it)

Usage: python phases.py DIR UI_PORT MIB
"""
import hashlib
import os
import sys
import time

from pyspark import SparkConf, SparkContext

work, port, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])


def mark(name):
    open(os.path.join(work, name), "w").close()


def wait_for(name):
    while not os.path.exists(os.path.join(work, name)):
        time.sleep(0.1)


def burn(seed):
    h = str(seed).encode()
    for _ in range(400_000):
        h = hashlib.sha256(h).digest()
    return h[0]


def burn_and_wait(seed):
    value = burn(seed)
    mark("wait-%d" % seed)
    wait_for("go-finish")
    return value


conf = (
    SparkConf()
    .setMaster("local[2]")
    .setAppName("peervisor phases")
    .set("spark.ui.port", port)
    .set("spark.port.maxRetries", "0")
    .set("spark.ui.showConsoleProgress", "false")
    .set("spark.local.dir", os.path.join(work, "local"))
)
sc = SparkContext(conf=conf)
sc.setLogLevel("ERROR")
mark("started")

sc.setJobGroup("io", "I/O phase: write and read %d MiB" % mib)
line = "x" * 1023
lines_per_part = mib * 1024 // 4
out = os.path.join(work, "data")
sc.parallelize(range(4), 4).flatMap(lambda _: [line] * lines_per_part).saveAsTextFile(out)
sc.textFile(out).count()
mark("io-done")
wait_for("go-cpu")

sc.setJobGroup("cpu", "CPU phase: SHA-256 loops")
sc.parallelize(range(4), 4).map(burn).sum()
mark("cpu-one")
wait_for("go-cpu2")
# Two tasks: local[2] runs two at once, and both must be running.
sc.parallelize(range(2), 2).map(burn_and_wait).sum()
mark("cpu-done")
wait_for("go-end")
sc.stop()

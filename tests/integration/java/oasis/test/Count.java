package oasis.test;

import org.apache.spark.sql.SparkSession;

/** A JVM Spark job for tests/integration/test_job_interface.py: counts a range of the length its first argument
 * gives, on the cluster it was submitted to, and prints one config it was given (spark.oasis.greeting). */
public final class Count {
    private Count() {
    }

    public static void main(String[] args) {
        SparkSession spark = SparkSession.builder().appName("oasis-jvm-count").getOrCreate();
        long count = spark.range(Long.parseLong(args[0])).count();
        String greeting = spark.conf().get("spark.oasis.greeting", "none");
        String master = spark.sparkContext().master().split(":")[0];
        System.out.println("count=" + count + " greeting=" + greeting + " master=" + master);
        spark.stop();
    }
}

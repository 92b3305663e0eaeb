/*
 * Starts one Elasticsearch node in this JVM, for the local stack of kb-platform.
 *
 * The Elasticsearch distribution starts its server through a separate CLI process that hands the
 * server its arguments over stdin; that CLI is not published to Maven Central. This class does the
 * part of the server's own bootstrap that matters for a local node, with public server APIs only:
 * read config/elasticsearch.yml, configure logging from config/log4j2.properties, load the
 * modules under ES_HOME/modules (each a folder with jars and a plugin-descriptor.properties, as in
 * the distribution), then construct and start org.elasticsearch.node.Node.
 *
 * Left out, compared with the distribution: the security manager / entitlements sandbox, the
 * native-controller spawner (machine learning), memory locking and the system-call filter, and the
 * bootstrap checks (they are only enforced on a node bound to a non-loopback address anyway).
 *
 * Usage: java -Des.path.home=ES_HOME -Des.path.conf=CONFIG_DIR -cp "ES_HOME/lib/*"
 *             kbplatform.elasticsearch.LocalNode
 * Compiled by elasticsearch.sh install; never committed as a .class.
 */
package kbplatform.elasticsearch;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginsLoader;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class LocalNode {

    private LocalNode() {}

    public static void main(String[] args) {
        final Path home = absolutePath(System.getProperty("es.path.home"), "es.path.home");
        final Path conf = absolutePath(System.getProperty("es.path.conf", home.resolve("config").toString()), "es.path.conf");
        final Environment environment;
        try {
            // the server's logging facade must be bound before the first server class logs
            LogConfigurator.configureESLogging();
            LogConfigurator.registerErrorListener();
            final Settings initial = Settings.builder().put(Environment.PATH_HOME_SETTING.getKey(), home.toString()).build();
            // elasticsearch.yml, with ${ENV_VAR} substitution, as in the distribution
            environment = InternalSettingsPreparer.prepareEnvironment(initial, Map.of(), conf, () -> "kb-local");
            LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
            LogConfigurator.configure(environment, true);
        } catch (Exception | Error e) {
            // logging is not set up yet: stderr ends up in the node's log file
            System.err.println("elasticsearch: cannot read the configuration in " + conf);
            e.printStackTrace();
            System.exit(1);
            return;
        }
        final Logger logger = LogManager.getLogger(LocalNode.class);
        Thread.setDefaultUncaughtExceptionHandler((thread, e) -> {
            logger.error("uncaught exception in thread [" + thread.getName() + "]", e);
            if (e instanceof Error) {
                // an OutOfMemoryError or similar leaves the node in an unknown state: stop hard
                Runtime.getRuntime().halt(e instanceof OutOfMemoryError ? 127 : 1);
            }
        });

        final Node node;
        try {
            Files.createDirectories(environment.pluginsDir());
            Files.createDirectories(environment.tmpDir());
            final PluginsLoader pluginsLoader = PluginsLoader.createPluginsLoader(
                PluginsLoader.loadModulesBundles(environment.modulesDir()),
                PluginsLoader.loadPluginsBundles(environment.pluginsDir()),
                Map.of() // no plugin needs native access enabled (that is for entitlements)
            );
            node = new Node(environment, pluginsLoader);
        } catch (Exception | Error e) {
            logger.fatal("could not construct the node", e);
            LogManager.shutdown();
            System.exit(1);
            return;
        }

        // SIGTERM / SIGINT (elasticsearch.sh down): close the node cleanly, then let the JVM exit.
        final CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                logger.info("stopping ...");
                node.prepareForClose();
                node.close();
                if (node.awaitClose(30, TimeUnit.SECONDS) == false) {
                    logger.warn("node did not close within 30s");
                }
                logger.info("stopped");
            } catch (Exception e) {
                logger.warn("error while closing the node", e);
            } finally {
                closed.countDown();
                LogManager.shutdown();
            }
        }, "kb-elasticsearch-shutdown"));

        try {
            node.start();
        } catch (Exception | Error e) {
            logger.fatal("could not start the node", e);
            System.exit(1); // runs the shutdown hook, which closes what was started
            return;
        }
        logger.info("local node started (home [{}], config [{}])", home, conf);

        // The node's own threads are daemon threads: this (non-daemon) main thread keeps the JVM up.
        try {
            closed.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static Path absolutePath(String value, String property) {
        if (value == null || value.isBlank()) {
            System.err.println("elasticsearch: system property " + property + " is not set");
            System.exit(2);
        }
        return Path.of(value).toAbsolutePath().normalize();
    }
}

# Sourced by the project's scripts: finds a JDK >= 25 and exports JAVA_HOME, or explains what to install.
# Order: $JAVA_HOME, then the system's JVM folders (newest first), then `java` on the PATH.
# A script that can do with a Java runtime alone (no javac: a JRE or a jlink image) sets
# MOEPORT_JAVA_DEFERRED=1 before sourcing and calls `moeport_use_java runtime` itself.

MOEPORT_MIN_JAVA=25

# Prints the major version of the Java at $1 (from its `release` file, without starting a JVM);
# with $2 = jdk, only if it also has javac.
moeport_java_major() {
  [ -x "$1/bin/java" ] || return 1
  [ "${2:-jdk}" != jdk ] || [ -x "$1/bin/javac" ] || return 1
  local v
  v=$(sed -n 's/^JAVA_VERSION="\([0-9][0-9]*\).*/\1/p' "$1/release" 2>/dev/null)
  if [ -z "$v" ]; then
    v=$("$1/bin/java" -version 2>&1 | sed -n '1s/.*version "\([0-9][0-9]*\).*/\1/p')
  fi
  [ -n "$v" ] && echo "$v"
}

# Prints the home of a Java >= 25: a JDK with $1 = jdk (the default), any runtime with $1 = runtime.
moeport_find_java() {
  local kind=${1:-jdk} tool=javac candidate major best="" best_major=0
  [ "$kind" = jdk ] || tool=java
  if [ -n "${JAVA_HOME:-}" ]; then
    major=$(moeport_java_major "$JAVA_HOME" "$kind") && [ "$major" -ge "$MOEPORT_MIN_JAVA" ] && { echo "$JAVA_HOME"; return 0; }
  fi
  for candidate in /usr/lib/jvm/* /usr/java/* /opt/java/* /Library/Java/JavaVirtualMachines/*/Contents/Home; do
    [ -d "$candidate" ] || continue
    major=$(moeport_java_major "$candidate" "$kind") || continue
    if [ "$major" -ge "$MOEPORT_MIN_JAVA" ] && [ "$major" -gt "$best_major" ]; then
      best=$candidate best_major=$major
    fi
  done
  [ -n "$best" ] && { echo "$best"; return 0; }
  if command -v "$tool" >/dev/null 2>&1; then
    candidate=$(dirname "$(dirname "$(readlink -f "$(command -v "$tool")")")")
    major=$(moeport_java_major "$candidate" "$kind") && [ "$major" -ge "$MOEPORT_MIN_JAVA" ] && { echo "$candidate"; return 0; }
  fi
  return 1
}

# Exports JAVA_HOME as a Java >= 25 of the kind asked (jdk or runtime), or says what to install.
moeport_use_java() {
  local found
  if ! found=$(moeport_find_java "$1"); then
    local what="a JDK"
    [ "$1" = jdk ] || what="a Java runtime"
    echo "moeport: needs $what $MOEPORT_MIN_JAVA or newer and found none (looked at \$JAVA_HOME, /usr/lib/jvm and the PATH); install one, e.g. Temurin $MOEPORT_MIN_JAVA (apt install temurin-$MOEPORT_MIN_JAVA-jdk, or https://adoptium.net), or set JAVA_HOME to it" >&2
    return 1
  fi
  JAVA_HOME=$found
  export JAVA_HOME
}

if [ -z "${MOEPORT_JAVA_DEFERRED:-}" ]; then
  moeport_use_java jdk || exit 1
fi
# The JVM flags every run of moeport code needs: the Vector API (SIMD kernels) and native access (FFM); and no loop
# predicates from profiles (-XX:-UseProfiledLoopPredicate: README.md, Performance, "Loop checks on the warm-up's word").
MOEPORT_JVM_FLAGS="--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate"
# And the Vector API kernel's compile commands (the file says which and why): a flag of its own,
# "-XX:CompileCommandFile=$MOEPORT_COMPILE_COMMANDS", quoted where used (the path may hold spaces).
MOEPORT_COMPILE_COMMANDS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/src/dist/compile-commands"

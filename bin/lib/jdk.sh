# Sourced by the project's scripts: finds a JDK >= 25 and exports JAVA_HOME, or explains what to install.
# Order: $JAVA_HOME, then the system's JVM folders (newest first), then `java` on the PATH.

MOEPORT_MIN_JAVA=25

# Prints the major version of the JDK at $1 (from its `release` file, without starting a JVM).
moeport_jdk_major() {
  [ -x "$1/bin/java" ] && [ -x "$1/bin/javac" ] || return 1
  local v
  v=$(sed -n 's/^JAVA_VERSION="\([0-9][0-9]*\).*/\1/p' "$1/release" 2>/dev/null)
  if [ -z "$v" ]; then
    v=$("$1/bin/java" -version 2>&1 | sed -n '1s/.*version "\([0-9][0-9]*\).*/\1/p')
  fi
  [ -n "$v" ] && echo "$v"
}

moeport_find_jdk() {
  local candidate major best="" best_major=0
  if [ -n "${JAVA_HOME:-}" ]; then
    major=$(moeport_jdk_major "$JAVA_HOME") && [ "$major" -ge "$MOEPORT_MIN_JAVA" ] && { echo "$JAVA_HOME"; return 0; }
  fi
  for candidate in /usr/lib/jvm/* /usr/java/* /opt/java/* /Library/Java/JavaVirtualMachines/*/Contents/Home; do
    [ -d "$candidate" ] || continue
    major=$(moeport_jdk_major "$candidate") || continue
    if [ "$major" -ge "$MOEPORT_MIN_JAVA" ] && [ "$major" -gt "$best_major" ]; then
      best=$candidate best_major=$major
    fi
  done
  [ -n "$best" ] && { echo "$best"; return 0; }
  if command -v javac >/dev/null 2>&1; then
    candidate=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
    major=$(moeport_jdk_major "$candidate") && [ "$major" -ge "$MOEPORT_MIN_JAVA" ] && { echo "$candidate"; return 0; }
  fi
  return 1
}

if ! JAVA_HOME=$(moeport_find_jdk); then
  echo "moeport: needs a JDK $MOEPORT_MIN_JAVA or newer and found none (looked at \$JAVA_HOME, /usr/lib/jvm and the PATH); install one, e.g. Temurin $MOEPORT_MIN_JAVA (apt install temurin-$MOEPORT_MIN_JAVA-jdk, or https://adoptium.net), or set JAVA_HOME to it" >&2
  exit 1
fi
export JAVA_HOME
# The JVM flags every run of moeport code needs: the Vector API (SIMD kernels) and native access (FFM).
MOEPORT_JVM_FLAGS="--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED"

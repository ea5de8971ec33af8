#!/bin/bash
# As the official image's script: the broker's API versions, or a non-zero exit when none answers.
exec java ${KAFKA_TOOLS_HEAP_OPTS:--Xmx128m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp '/opt/kafka/libs/*:/opt/kafka/tools-libs/*' org.apache.kafka.tools.BrokerApiVersionsCommand "$@"

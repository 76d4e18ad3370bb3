// Stack probe, MQTT part: a robot publishes a QoS 1 MQTT 5 message on its own topic with its own credentials;
// the cloud (cloud listener) and the robot itself both receive it.
import crypto from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { activityInfo } from '@temporalio/activity';
import type { RobotDirectory } from '../../common/robot-directory';

export interface MqttProbeDeps {
  robotUrl: string;
  cloudUrl: string;
  cloud: { username: string; password: string };
  robots: RobotDirectory;
}

function receiveOne(client: MqttClient, topic: string, match: string, timeoutMs: number): Promise<{ qos: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within ${timeoutMs} ms`)), timeoutMs);
    client.on('message', (t, payload, packet) => {
      if (t === topic && payload.toString() === match) {
        clearTimeout(timer);
        resolve({ qos: packet.qos });
      }
    });
  });
}

export function createMqttProbeActivities(deps: MqttProbeDeps) {
  return {
    async probeMqtt(probeId: string, robotId: string): Promise<{ attempt: number; robotReceivedQos: number; cloudReceivedQos: number }> {
      const creds = deps.robots.mqttCredentials(robotId);
      const topic = `ota/${robotId}/probe`;
      const payload = `probe ${probeId}`;
      const robot = await mqtt.connectAsync(deps.robotUrl, { ...creds, clientId: creds.username, protocolVersion: 5, reconnectPeriod: 0 });
      const cloud = await mqtt.connectAsync(deps.cloudUrl, {
        ...deps.cloud,
        clientId: `cloud-probe-${crypto.randomBytes(4).toString('hex')}`,
        protocolVersion: 5,
        reconnectPeriod: 0,
      });
      try {
        await robot.subscribeAsync(topic, { qos: 1 });
        await cloud.subscribeAsync(topic, { qos: 1 });
        const robotGot = receiveOne(robot, topic, payload, 10000);
        const cloudGot = receiveOne(cloud, topic, payload, 10000);
        const ack = await robot.publishAsync(topic, payload, { qos: 1 });
        const reason = (ack as { reasonCode?: number } | undefined)?.reasonCode ?? 0;
        if (reason >= 0x80) throw new Error(`PUBACK reason ${reason}`);
        const [r, c] = await Promise.all([robotGot, cloudGot]);
        return { attempt: activityInfo().attempt, robotReceivedQos: r.qos, cloudReceivedQos: c.qos };
      } finally {
        await Promise.allSettled([robot.endAsync(), cloud.endAsync()]);
      }
    },
  };
}

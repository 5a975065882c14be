// The reference stack (stacks/orderflow.toml --env dev) as the CDK app users write today: same
// resources, same settings. Only `cdk synth` is timed; nothing is deployed.
const cdk = require('aws-cdk-lib');
const { aws_ec2: ec2, aws_s3: s3, aws_ecr: ecr, aws_logs: logs, aws_iam: iam, aws_batch: batch } = cdk;

const app = new cdk.App();
const stack = new cdk.Stack(app, 'orderflow-dev', { env: { account: '123456789012', region: 'us-east-1' } });
const P = 'orderflow-dev';
cdk.Tags.of(stack).add('provision:stack', 'orderflow');
cdk.Tags.of(stack).add('provision:env', 'dev');

const vpc = ec2.Vpc.fromVpcAttributes(stack, 'Vpc', {
  vpcId: 'vpc-12345678', availabilityZones: ['us-east-1a', 'us-east-1b'],
  publicSubnetIds: ['subnet-1111', 'subnet-2222'], publicSubnetRouteTableIds: ['rtb-1111', 'rtb-2222'],
});
new ec2.GatewayVpcEndpoint(stack, 'S3Endpoint', { vpc, service: ec2.GatewayVpcEndpointAwsService.S3, subnets: [{ subnetType: ec2.SubnetType.PUBLIC }] });
const sg = new ec2.SecurityGroup(stack, 'BatchSg', { vpc, securityGroupName: `${P}-batch`, allowAllOutbound: true });

const bucket = new s3.Bucket(stack, 'Data', {
  bucketName: `${P}-data-123456789012`, versioned: true, encryption: s3.BucketEncryption.S3_MANAGED,
  blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL, lifecycleRules: [{ noncurrentVersionExpiration: cdk.Duration.days(30) }],
});
const repo = new ecr.Repository(stack, 'Runtime', { repositoryName: `${P}-runtime`, imageScanOnPush: true, lifecycleRules: [{ maxImageCount: 5 }] });
const logGroup = new logs.LogGroup(stack, 'Logs', { logGroupName: `/aws/batch/${P}`, retention: logs.RetentionDays.ONE_MONTH });

const instanceRole = new iam.Role(stack, 'InstanceRole', { roleName: `${P}-instance`, assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
  managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonEC2ContainerServiceforEC2Role')] });
const profile = new iam.CfnInstanceProfile(stack, 'InstanceProfile', { instanceProfileName: `${P}-instance`, roles: [instanceRole.roleName] });
const serviceRole = new iam.Role(stack, 'ServiceRole', { roleName: `${P}-batch-service`, assumedBy: new iam.ServicePrincipal('batch.amazonaws.com'),
  managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSBatchServiceRole')] });
const executionRole = new iam.Role(stack, 'ExecutionRole', { roleName: `${P}-execution`, assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
  managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonECSTaskExecutionRolePolicy')] });
const jobRole = new iam.Role(stack, 'JobRole', { roleName: `${P}-job`, assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com') });
bucket.grantReadWrite(jobRole);

const lt = new ec2.CfnLaunchTemplate(stack, 'SpotLt', { launchTemplateName: `${P}-spot`, launchTemplateData: {
  blockDeviceMappings: [{ deviceName: '/dev/xvda', ebs: { volumeSize: 50, volumeType: 'gp3', encrypted: true, deleteOnTermination: true } }] } });
const ce = (id, name, type, strategy, types, withLt) => new batch.CfnComputeEnvironment(stack, id, {
  computeEnvironmentName: name, type: 'MANAGED', state: 'ENABLED', serviceRole: serviceRole.roleArn,
  computeResources: { type, allocationStrategy: strategy, minvCpus: 0, maxvCpus: type === 'SPOT' ? 16 : 8, instanceTypes: types,
    subnets: ['subnet-1111', 'subnet-2222'], securityGroupIds: [sg.securityGroupId], instanceRole: profile.attrArn,
    bidPercentage: type === 'SPOT' ? 100 : undefined, ec2Configuration: [{ imageType: 'ECS_AL2023' }],
    launchTemplate: withLt ? { launchTemplateName: lt.launchTemplateName, version: '$Default' } : undefined } });
const spot = ce('Spot', `${P}-spot`, 'SPOT', 'SPOT_PRICE_CAPACITY_OPTIMIZED', ['c5.xlarge', 'c5.2xlarge', 'm5.xlarge', 'm5.2xlarge'], true);
const ondemand = ce('OnDemand', `${P}-ondemand`, 'EC2', 'BEST_FIT_PROGRESSIVE', ['c5.xlarge', 'm5.xlarge'], false);
new batch.CfnJobQueue(stack, 'Main', { jobQueueName: `${P}-main`, priority: 1, state: 'ENABLED', computeEnvironmentOrder: [
  { order: 1, computeEnvironment: spot.ref }, { order: 2, computeEnvironment: ondemand.ref }] });

const env = { STACK: 'orderflow', STACK_ENV: 'dev', USE_GPU: 'false', AWS_REGION: 'us-east-1', BUCKET_DATA: bucket.bucketName };
const jobDef = (id, key, command, vcpus, memory, extraEnv, timeout) => new batch.CfnJobDefinition(stack, id, {
  jobDefinitionName: `${P}-${key}`, type: 'container', platformCapabilities: ['EC2'], propagateTags: true,
  retryStrategy: { attempts: key === 'prepare' ? 3 : 1, evaluateOnExit: [{ onStatusReason: 'Host EC2*', action: 'RETRY' }, { onExitCode: '1', action: 'EXIT' }] },
  timeout: timeout ? { attemptDurationSeconds: timeout } : undefined,
  containerProperties: { image: `${repo.repositoryUri}:latest`, command, jobRoleArn: jobRole.roleArn, executionRoleArn: executionRole.roleArn,
    resourceRequirements: [{ type: 'VCPU', value: String(vcpus) }, { type: 'MEMORY', value: String(memory) }],
    environment: Object.entries({ ...env, ...extraEnv }).map(([name, value]) => ({ name, value })),
    logConfiguration: { logDriver: 'awslogs', options: { 'awslogs-group': logGroup.logGroupName, 'awslogs-region': 'us-east-1', 'awslogs-stream-prefix': key } } } });
jobDef('Prepare', 'prepare', ['runtime', 'prepare'], 2, 8192, { CHECKPOINT_INTERVAL: '50' }, 18000);
jobDef('Train', 'train', ['runtime', 'train', '--device', 'cpu'], 4, 16384, {});
app.synth();
